package router

import "github.com/connpipe/connpipe/shared/hashring"

// Ring is the weighted rendezvous ring of mode "hash" (package hashring).
type Ring = hashring.Ring

// KeyFunc derives the hash of a record's routing key.
type KeyFunc = hashring.KeyFunc

// NewRing builds a ring over the backends of t, every backend up.
var NewRing = hashring.NewRing

// KeyFor returns the key function named by a table's hash key.
var KeyFor = hashring.KeyFor

// Key functions.
var (
	HashSrc  = hashring.HashSrc
	HashDst  = hashring.HashDst
	HashPair = hashring.HashPair
	HashFlow = hashring.HashFlow
)
