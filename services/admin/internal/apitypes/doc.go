// Package apitypes holds the bodies of admin's HTTP API: the requests the
// server decodes and the answers it encodes, shared by the server (package
// api) and the command-line client (package cli) so neither restates the
// other's fields.
package apitypes
