package store

// LearnSplit makes b know that second sec of its instance is split
// 1 << bits ways.
func LearnSplit(b *Buckets, sec int64, bits int) { b.learn(sec, int64(bits)) }
