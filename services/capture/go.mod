module github.com/connpipe/connpipe/services/capture

go 1.26.0

require github.com/connpipe/connpipe/shared v0.0.0

require (
	github.com/google/gopacket v1.1.19 // indirect
	golang.org/x/net v0.50.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

replace github.com/connpipe/connpipe/shared => ../../shared
