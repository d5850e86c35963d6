module github.com/connpipe/connpipe/services/admin

go 1.26.0

require (
	github.com/connpipe/connpipe/shared v0.0.0
	github.com/rabbitmq/amqp091-go v1.16.0
)

replace github.com/connpipe/connpipe/shared => ../../shared
