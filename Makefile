# connpipe — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
MODULE := github.com/connpipe/connpipe
PKGS := $(MODULE)/...
BIN := bin
SERVICES := capture consumer admin
export CGO_ENABLED ?= 0

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN{FS=":.*## "}{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

build: ## build the three binaries into bin/ (static, no cgo)
	@mkdir -p $(BIN)
	@for s in $(SERVICES); do $(GO) build -trimpath -o $(BIN)/$$s $(MODULE)/services/$$s || exit 1; done
	@ls -l $(BIN)

testenv: ## install (from Debian's packages) and start RabbitMQ and three Redis servers for tests
	@scripts/testenv.sh up

testenv-down: ## stop the test servers that testenv started
	@scripts/testenv.sh down

test: testenv ## run every test against real RabbitMQ and Redis (installs and starts them if missing)
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 20m $(PKGS)

bench: testenv ## run the benchmarks: hot paths, then the end-to-end replay through the whole pipeline
	$(GO) test -run '^$$' -bench . -benchmem -count=1 $(PKGS)

bench-live: ## live capture beside tcpdump over a veth pair at fixed rates (root; installs tcpdump; BENCHLIVE_FLAGS=...)
	@CONNPIPE_TCPDUMP=1 scripts/testenv.sh up
	set -a; . "$$(scripts/testenv.sh path)"; set +a; $(GO) run $(MODULE)/services/capture/cmd/benchlive $(BENCHLIVE_FLAGS)

demo: testenv build ## run the whole pipeline natively: 2 Redis, RabbitMQ, capture on lo, 2 consumers, admin, traffic; 30/70 then 50/50
	@scripts/demo.sh

FUZZTIME ?= 60s
fuzz: ## run every Fuzz target for FUZZTIME each (default 60s) and report the executions
	@GO="$(GO)" FUZZTIME="$(FUZZTIME)" scripts/fuzz.sh

lint: ## go vet and gofmt check
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

fmt: ## format the Go code
	gofmt -w $$(git ls-files '*.go')

clean: ## remove build output
	rm -rf $(BIN)

-include deployments/compose/compose.mk

.PHONY: help build testenv testenv-down test bench bench-live demo fuzz lint fmt clean
