# keyward build and test targets. `make test` is the whole suite: the same
# command .ci/run uses.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# Fuzz budgets are execution counts, about 10 s each here: a duration races
# the fuzz coordinator's deadline in Go 1.26 (golang/go#75804) and fails
# with "context deadline exceeded" on a busy machine. FUZZTIME=1m (or Nx)
# overrides every target's budget.
FUZZTIME ?=

.PHONY: build run test lint unit fuzz bench bench-http bench-cold clean

build: ## build ./bin/keyward
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/keyward ./cmd/keyward

run: build ## build and run keyward serve on the embedded store
	./bin/keyward serve

test: lint unit fuzz ## the whole suite: lint, race-enabled tests, short fuzzing

lint: ## gofmt check and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit: ## every test, with the race detector; then the allocation tests without it
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run 'Allocs$$' ./internal/...

fuzz: ## each fuzz target for a short budget
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(or $(FUZZTIME),300000x) ./internal/secret/
	$(GO) test -run '^$$' -fuzz '^FuzzCreateTokenRequest$$' -fuzztime $(or $(FUZZTIME),20000x) ./internal/api/
	$(GO) test -run '^$$' -fuzz '^FuzzFastVerifyBody$$' -fuzztime $(or $(FUZZTIME),50000x) ./internal/api/
	$(GO) test -run '^$$' -fuzz '^FuzzSimpleRequest$$' -fuzztime $(or $(FUZZTIME),30000x) ./internal/gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzSimpleHead$$' -fuzztime $(or $(FUZZTIME),30000x) ./internal/gateway/

bench: ## in-process benchmarks (verify vs one HMAC)
	$(GO) test -run '^$$' -bench . -benchmem ./internal/verify/ ./internal/secret/

bench-http: ## POST /v1/verify vs a bare net/http handler, same load tool
	bash bench/verify-http.sh

bench-cold: ## cold verify (cache miss) with 1,000,000 tokens on SQLite and PostgreSQL
	bash bench/cold-verify.sh

clean:
	rm -rf bin
