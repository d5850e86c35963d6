# The compose stack's targets, included by the root Makefile.
#
#   make up                 build the images offline, write deployments/compose/.env, start
#   make up CONSUMERS=3     the same with three consumers
#   make ps | logs | down   (make down VOLUMES=1 also removes the data)
#   make up CLUSTER=1       with a three-node RabbitMQ cluster and two captures
#                           (deployments/compose/cluster.yml; give CLUSTER=1 to ps, logs, down too)
#   make up MIRROR=1        with a mirror source copying capture's traffic in VXLAN to a second
#                           capture in mirror mode (deployments/compose/mirror.yml; MIRROR=1 to ps, logs, down too)
#   make up HA=1            each Redis backend a primary, two replicas and three sentinels, named
#                           by its sentinels (deployments/compose/ha.yml; HA=1 to ps, logs, down too)
#   make e2e                the end-to-end test (its own project, connpipe-e2e)
#   make e2e-cluster        the cluster's end-to-end test (its own project, connpipe-cluster)
#   make up OBSERVE=1       with Prometheus and Alertmanager (deployments/observability;
#                           give OBSERVE=1 to ps, logs, down too)
#   make e2e-observe        alerts fire and resolve on a stack with OBSERVE=1 (project connpipe-observe)
#   make e2e-ha             redis-a's primary killed under load on a stack with HA=1 (project connpipe-ha)

COMPOSE_DIR := deployments/compose
COMPOSE_ENV ?= $(CURDIR)/$(COMPOSE_DIR)/.env
CONSUMERS ?= 1
# "docker compose" when the plugin answers, else docker-compose (v1). Read
# when a recipe runs, so after compose-v2 has installed the plugin.
COMPOSE_CMD ?= $(shell if docker compose version >/dev/null 2>&1; then echo docker compose; \
	elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; else echo docker compose; fi)
COMPOSE_RUN = $(COMPOSE_CMD) --env-file $(COMPOSE_ENV) --file $(CURDIR)/docker-compose.yml \
	$(if $(CLUSTER),--file $(CURDIR)/$(COMPOSE_DIR)/cluster.yml) \
	$(if $(MIRROR),--file $(CURDIR)/$(COMPOSE_DIR)/mirror.yml) \
	$(if $(HA),--file $(CURDIR)/$(COMPOSE_DIR)/ha.yml) \
	$(if $(OBSERVE),--file $(CURDIR)/deployments/observability/compose.yml) --project-directory $(CURDIR)

# env.sh init is idempotent: it creates the file when absent and links
# ./.env to it, so plain docker compose commands read the same settings.
$(COMPOSE_ENV):
	@$(COMPOSE_DIR)/env.sh init $(COMPOSE_ENV)

compose-v2: ## make `docker compose` (v2) answer: builds the CLI plugin from the Go module proxy when it is missing
	@GO=$(GO) scripts/compose-v2.sh

images: compose-v2 ## build every image of the compose stack without a registry (debootstrap base, cached)
	@$(COMPOSE_DIR)/env.sh init $(COMPOSE_ENV)
	@OBSERVE=$(OBSERVE) HA=$(HA) $(COMPOSE_DIR)/images.sh $(COMPOSE_ENV) >/dev/null

up: images ## start the compose stack (CONSUMERS=3 for three consumers, CLUSTER=1 for three RabbitMQ nodes and two captures, OBSERVE=1 with Prometheus and Alertmanager, HA=1 with two replicas and three sentinels per Redis); URLs are printed
	$(COMPOSE_RUN) up -d --scale consumer=$(CONSUMERS)
	@. $(COMPOSE_ENV); \
	echo; \
	echo "admin API   http://127.0.0.1:$$ADMIN_PORT/api/v1/status   (token: ADMIN_TOKEN in $(COMPOSE_DIR)/.env)"; \
	echo "RabbitMQ    http://127.0.0.1:$$RABBITMQ_MGMT_PORT/   (user $$RABBITMQ_USER, password RABBITMQ_PASSWORD in $(COMPOSE_DIR)/.env)"; \
	echo "status      $(COMPOSE_CMD) exec admin admin status"; \
	if [ -n "$(OBSERVE)" ]; then \
	echo "Prometheus  http://127.0.0.1:$${PROMETHEUS_PORT:-9090}/alerts"; \
	echo "Alertmanager http://127.0.0.1:$${ALERTMANAGER_PORT:-9093}/"; fi; \
	if [ -n "$(HA)" ]; then \
	echo "primary     $(COMPOSE_CMD) -f docker-compose.yml -f $(COMPOSE_DIR)/ha.yml exec sentinel-a1 redis-cli -p 26379 --user connpipe-admin sentinel get-master-addr-by-name redis-a"; fi

down: ## stop the compose stack (VOLUMES=1 also removes its data)
	@if [ -f $(COMPOSE_ENV) ]; then $(COMPOSE_RUN) down --remove-orphans $(if $(VOLUMES),-v); \
	else echo "no $(COMPOSE_ENV): nothing was started with make up"; fi

ps: $(COMPOSE_ENV) ## list the compose stack's containers and their health
	@$(COMPOSE_RUN) ps

logs: $(COMPOSE_ENV) ## follow the compose stack's logs
	@$(COMPOSE_RUN) logs -f --tail=100

e2e: compose-v2 ## end-to-end test of the compose stack in its own project (CONNPIPE_E2E_FRESH=1: rebuild images from scratch)
	COMPOSE="$(COMPOSE_CMD)" $(GO) test -tags e2e -count=1 -v -timeout 30m github.com/connpipe/connpipe/deployments/compose/e2e

e2e-mirror: compose-v2 ## end-to-end test of mirror mode: capture and a mirror target's capture record the same packets (project connpipe-mirror)
	COMPOSE="$(COMPOSE_CMD)" $(GO) test -tags e2e,mirror -run '^TestComposeMirror$$' -count=1 -v -timeout 30m github.com/connpipe/connpipe/deployments/compose/e2e

e2e-cluster: compose-v2 ## end-to-end test of the three-node RabbitMQ cluster and two captures (project connpipe-cluster)
	COMPOSE="$(COMPOSE_CMD)" $(GO) test -tags e2e,cluster -run '^TestComposeCluster$$' -count=1 -v -timeout 30m github.com/connpipe/connpipe/deployments/compose/e2e

e2e-ha: compose-v2 ## end-to-end test of HA=1: redis-a's primary killed under traffic, with REDIS_MIN_REPLICAS=1 and 0 (project connpipe-ha)
	COMPOSE="$(COMPOSE_CMD)" $(GO) test -tags e2e,ha -run '^TestComposeHA$$' -count=1 -v -timeout 40m github.com/connpipe/connpipe/deployments/compose/e2e

e2e-observe: compose-v2 ## end-to-end test of the alerts with OBSERVE=1: RabbitMQ stopped and started, a Redis at maxmemory (project connpipe-observe)
	COMPOSE="$(COMPOSE_CMD)" $(GO) test -tags e2e,observe -run '^TestComposeObserve$$' -count=1 -v -timeout 30m github.com/connpipe/connpipe/deployments/compose/e2e

.PHONY: compose-v2 images up down ps logs e2e e2e-cluster e2e-mirror e2e-observe e2e-ha
