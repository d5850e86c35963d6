module github.com/connpipe/connpipe/services/capture

go 1.26.0

require (
	github.com/connpipe/connpipe/shared v0.0.0
	github.com/google/gopacket v1.1.19
	golang.org/x/net v0.50.0
)

require golang.org/x/sys v0.48.0 // indirect

replace github.com/connpipe/connpipe/shared => ../../shared
