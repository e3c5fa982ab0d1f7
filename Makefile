# keyward build and test targets. `make test` is the whole suite: the same
# command .ci/run uses.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
FUZZTIME ?= 10s

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

unit: ## every test, with the race detector
	$(GO) test -race -count=1 ./...

fuzz: ## each fuzz target for $(FUZZTIME)
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/secret/
	$(GO) test -run '^$$' -fuzz '^FuzzCreateTokenRequest$$' -fuzztime $(FUZZTIME) ./internal/api/
	$(GO) test -run '^$$' -fuzz '^FuzzFastVerifyBody$$' -fuzztime $(FUZZTIME) ./internal/api/

bench: ## in-process benchmarks (verify vs one HMAC)
	$(GO) test -run '^$$' -bench . -benchmem ./internal/verify/ ./internal/secret/

bench-http: ## POST /v1/verify vs a bare net/http handler, same load tool
	bash bench/verify-http.sh

bench-cold: ## cold verify (cache miss) with 1,000,000 tokens on SQLite and PostgreSQL
	bash bench/cold-verify.sh

clean:
	rm -rf bin
