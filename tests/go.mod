module github.com/connpipe/connpipe/tests

go 1.26.0

require (
	github.com/connpipe/connpipe/shared v0.0.0
	github.com/google/gopacket v1.1.19
	github.com/rabbitmq/amqp091-go v1.16.0
	github.com/redis/go-redis/v9 v9.23.0
	go.yaml.in/yaml/v3 v3.0.5
	golang.org/x/sys v0.48.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/kelseyhightower/envconfig v1.4.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/net v0.0.0-20190620200207-3b0461eec859 // indirect
)

replace github.com/connpipe/connpipe/shared => ../shared
