module github.com/connpipe/connpipe/tools

go 1.26
