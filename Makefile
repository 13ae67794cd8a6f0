# ctcr: build, test, bench, demo, fuzz, clean.
# test, bench and demo need root (ptrace, mounts, restoring PIDs).

# sudo drops /usr/local/go/bin from PATH: fall back to it.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
TEST_TIMEOUT ?= 20m
FUZZTIME ?= 10s

.PHONY: build test stress bench demo fuzz clean

build:
	$(GO) build -o bin/ctcr ./cmd/ctcr

# The integration tests in test/ build bin/ctcr themselves (or use $$CTCR).
test:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./...

# The long sweeps: ctcr killed at 30 random moments of each kind of
# dump, restore and checkpoint (CTCR_STRESS=1 raises the tests' counts).
stress:
	CTCR_STRESS=1 $(GO) test -count=1 -timeout 60m -v -run 'TestKill' ./test/

bench: build
	$(GO) run ./test/bench -ctcr bin/ctcr
	$(GO) run ./test/bench/tasks -ctcr bin/ctcr

demo: build
	test/demo/demo.sh

# Runs every Fuzz* function of every package for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

clean:
	rm -rf bin test/.build
