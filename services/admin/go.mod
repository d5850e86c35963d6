module github.com/connpipe/connpipe/services/admin

go 1.26

require github.com/connpipe/connpipe/shared v0.0.0

replace github.com/connpipe/connpipe/shared => ../../shared
