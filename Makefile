# ctcr: build, install, test, bench, demo, fuzz, clean.
# test, bench and demo need root (ptrace, mounts, restoring PIDs).

# sudo drops /usr/local/go/bin from PATH: fall back to it.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
# The suite takes about 9 minutes on a quiet 2-core machine and 21 at a
# load of 8: the timeout only catches a hang.
TEST_TIMEOUT ?= 45m
FUZZTIME ?= 10s

# Install layout (DESTDIR for packaging: make install DESTDIR=/tmp/pkg).
PREFIX ?= /usr/local
DESTDIR ?=
SBINDIR = $(DESTDIR)$(PREFIX)/sbin
LIBEXECDIR = $(DESTDIR)$(PREFIX)/libexec/ctcr
MANDIR = $(DESTDIR)$(PREFIX)/share/man/man8
BASHCOMPDIR = $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR = $(DESTDIR)$(PREFIX)/share/zsh/site-functions

# `ctcr version` names the commit it was built from.
# Outside a git checkout (a release tarball) nothing is linked in and
# ctcr falls back to what the go command stamped, or "unknown".
COMMIT := $(shell c=$$(git rev-parse --short=12 HEAD 2>/dev/null) && { git diff --quiet HEAD 2>/dev/null || c=$$c-dirty; echo $$c; })
LDFLAGS := $(if $(COMMIT),-ldflags "-X main.commit=$(COMMIT)")

.PHONY: build install uninstall test stress bench bench-criu demo fuzz clean

build:
	$(GO) build $(LDFLAGS) -o bin/ctcr ./cmd/ctcr

# ctcr to sbin (it needs root), the vzctl wrappers to libexec/ctcr, man
# pages (section 8, from the commands' --help) and bash/zsh completion
# (cobra's) under share.
install: build
	install -d $(SBINDIR) $(LIBEXECDIR) $(MANDIR) $(BASHCOMPDIR) $(ZSHCOMPDIR)
	install -m 0755 bin/ctcr $(SBINDIR)/ctcr
	install -m 0755 contrib/vzctl-chkpnt contrib/vzctl-restore $(LIBEXECDIR)/
	bin/ctcr man $(MANDIR)
	bin/ctcr completion bash > $(BASHCOMPDIR)/ctcr
	bin/ctcr completion zsh > $(ZSHCOMPDIR)/_ctcr
	@echo "installed $(SBINDIR)/ctcr ($$($(SBINDIR)/ctcr --version))"

uninstall:
	rm -f $(SBINDIR)/ctcr $(BASHCOMPDIR)/ctcr $(ZSHCOMPDIR)/_ctcr $(MANDIR)/ctcr.8 $(MANDIR)/ctcr-*.8
	rm -rf $(LIBEXECDIR)

# The integration tests in test/ build bin/ctcr themselves (or use $$CTCR).
test:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./...

# The long sweeps: ctcr killed at 30 random moments of each kind of
# dump, restore and checkpoint (CTCR_STRESS=1 raises the tests' counts).
stress:
	CTCR_STRESS=1 $(GO) test -count=1 -timeout 60m -v -run 'TestKill|TestSeizeStorms|TestImageMutations' ./test/

# BENCH_FLAGS go to both benches: make bench BENCH_FLAGS='-runs 3 -json'.
bench: build
	$(GO) run ./test/bench -ctcr bin/ctcr $(BENCH_FLAGS)
	$(GO) run ./test/bench/tasks -ctcr bin/ctcr $(BENCH_FLAGS)

# ctcr and CRIU side by side on the same workloads, taking turns:
# make bench-criu CRIU=/path/to/criu (built from CRIU's sources).
bench-criu: build
	$(GO) run ./test/bench/vscriu -ctcr bin/ctcr -criu "$(CRIU)" $(BENCH_FLAGS)

# The first build compiles for a minute or two: it shows a line per
# package on a terminal, and says so once otherwise.
demo:
	@echo "demo: building bin/ctcr (the first build takes a minute or two)"
	@mkdir -p bin
	@if [ -t 1 ]; then \
		( $(GO) build -v $(LDFLAGS) -o bin/ctcr ./cmd/ctcr 2>&1; echo "build-exit $$?" ) | while IFS= read -r l; do \
			case "$$l" in \
			"build-exit 0") printf '\r\033[K' ;; \
			"build-exit "*) exit 1 ;; \
			"#"*|*.go:*) printf '\r\033[K%s\n' "$$l" ;; \
			*) printf '\r\033[K  compiling %s' "$$l" ;; \
			esac; \
		done; \
	else \
		$(GO) build $(LDFLAGS) -o bin/ctcr ./cmd/ctcr; \
	fi
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
