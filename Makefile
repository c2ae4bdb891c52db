# The two commands of README.md (and the quick tier of the second), and the checks CI runs. Everything they need is built here.
CARGO ?= cargo
LOCAL_CLUSTER := hack/local-cluster.sh

.PHONY: run test test-quick test-docs browser test-install test-image test-node test-e2e check crds docs check-docs control-plane helm image bench-verify bench-scale bench-proxy fuzz mutants mutants-shard cargo-mutants

## run: start a local control plane, install the CRDs, run the operator, apply examples/ (Ctrl-C stops all)
run: control-plane
	$(CARGO) build
	$(LOCAL_CLUSTER) --kubeconfig target/local-cluster/kubeconfig -- hack/run-local.sh

## test: build what is missing and run every test: unit, integration and browser tests on a real control plane (test-quick), the install renders, the documented from-source run, the image smoke test, the nodes, end to end on the nodes
test: test-quick helm
	$(MAKE) test-install test-docs test-image test-node test-e2e

## test-quick: the unit, integration and browser tests on a real local control plane only (no Helm, image or nodes: no root or cgroup v1 needed)
test-quick: control-plane browser
	$(CARGO) test --no-run
	hack/last-words.sh target/test-logs/test-quick.log -- $(LOCAL_CLUSTER) -- $(CARGO) test

## test-docs: the pages that tell you to run commands against a cluster, run as written against a local control plane (docs/installation/from-source.md)
test-docs: control-plane
	$(CARGO) build
	$(LOCAL_CLUSTER) -- tests/docs/from-source.sh

## test-install: the Helm chart and the kustomize installs render the same objects, lint clean, and apply (server dry run); the chart works as a subchart, pins no UID, takes extraArgs, ships the dashboard and a helm test
test-install: control-plane helm
	$(LOCAL_CLUSTER) -- tests/install/compare.sh
	$(LOCAL_CLUSTER) -- tests/install/adopters.sh

## image: the container image as an OCI archive, target/image/access-token-operator.oci.tar (static musl binary, FROM scratch, UID 65532, OCI labels; buildah, no daemon)
image:
	hack/image/build.sh

## test-image: smoke test of the image: its config, `--help` and the operator's probes in a container (podman, runc) against a local control plane
test-image: image control-plane
	$(LOCAL_CLUSTER) -- tests/image/smoke.sh

## test-node: two real nodes (kubelet, containerd, runc) in the local cluster: smoke test, then check nothing is left behind
test-node:
	hack/control-plane/build.sh --with-node >/dev/null
	ATO_NODE_SMOKE_STATE=target/node-smoke.state $(LOCAL_CLUSTER) --with-node -- tests/node/smoke.sh
	tests/node/leftovers.sh $$(cat target/node-smoke.state)

## test-e2e: the image on two real nodes, installed with Helm and with kustomize: webhook authentication through kube-apiserver, leader pod deletion, clean uninstall; Helm with the proxy: exec, logs -f, port-forward, cp through it
test-e2e: image helm
	hack/control-plane/build.sh --with-node >/dev/null
	$(CARGO) test --test e2e --no-run
	tests/e2e/workload-image.sh >/dev/null
	@# One cluster, three installs in turn (one test thread: Helm, kustomize, then the proxy,
	@# which stays installed): each uninstall is followed by a reinstall in the same cluster.
	hack/last-words.sh target/test-logs/e2e.log -- env HELM="$$(hack/helm/build.sh)" $(LOCAL_CLUSTER) --with-node -- $(CARGO) test --test e2e -- --test-threads 1 helm_install kustomize_install proxy_install

## bench-verify: verifier TokenReview throughput/latency vs kube-apiserver, and revocation delay; writes BENCHMARKS.md
bench-verify: control-plane
	$(CARGO) bench --bench verify --no-run
	$(LOCAL_CLUSTER) -- $(CARGO) bench --bench verify

## bench-scale: N AccessTokens (BENCH_SCALE_TOKENS, default 1000; BENCH_SCALE_NAMESPACES, default 1) to Active vs. a floor and KCM's legacy SA token controller; RSS, restart CPU; writes BENCHMARKS.md
## (debug build with optimised dependencies, as `make run`: issue 8's figures were taken on it; BENCH_SCALE_PROFILE=release for the optimised build)
BENCH_SCALE_PROFILE ?= dev
bench-scale: control-plane
	$(CARGO) bench --profile $(BENCH_SCALE_PROFILE) --bench scale --no-run
	$(LOCAL_CLUSTER) -- $(CARGO) bench --profile $(BENCH_SCALE_PROFILE) --bench scale

## bench-proxy: the authenticating proxy vs kube-apiserver's webhook path with the same token: GET p50/p99, LIST, watch delay, throughput, RSS with 1,000 watches; writes BENCHMARKS.md
bench-proxy: control-plane
	$(CARGO) bench --bench proxy --no-run
	$(LOCAL_CLUSTER) -- $(CARGO) bench --bench proxy

## mutants: cargo-mutants over the pure modules with their unit tests (.cargo/mutants.toml); fails on any missed mutant (about 30 minutes on 2 cores: not part of `make test`)
mutants: cargo-mutants
	# Exit status 3 means some mutants made the tests hang (token generation looping for
	# ever): caught by the timeout. Only missed mutants fail the target.
	cargo mutants --output target/mutants || [ $$? = 3 ]
	test ! -s target/mutants/mutants.out/missed.txt

## mutants-shard: a twelfth of `make mutants`, in place (about 27 mutants, 5 to 10 minutes): shard MUTANTS_SHARD (0 to 11; default: the commit count modulo 12, so each landing checks another twelfth); what .ci/run runs
MUTANTS_SHARD ?= $(shell echo $$(( $$(git rev-list --count HEAD) % 12 )))
mutants-shard: cargo-mutants
	cargo mutants --in-place --shard $(MUTANTS_SHARD)/12 --output target/mutants-shard || [ $$? = 3 ]
	test ! -s target/mutants-shard/mutants.out/missed.txt

cargo-mutants:
	[ "$$(cargo mutants --version 2>/dev/null)" = "cargo-mutants 27.1.0" ] || cargo install --locked cargo-mutants --version 27.1.0

## check: formatting, lints, and the dependency policy of deny.toml (licenses, bans, sources; needs cargo-deny)
check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --test e2e -- -D warnings
	@# One way only: the verifier and the proxy (tests included) never import the controller.
	! grep -rn "crate::controller" src/verifier src/proxy
	$(CARGO) deny --log-level error check licenses bans sources
	$(MAKE) check-docs

## docs: regenerate the reference pages of docs/reference/ (CRD fields, flags, Helm values) from their sources
docs:
	hack/ensure-packages.sh python3-yaml
	$(CARGO) build --quiet
	python3 hack/docs/generate.py --binary target/debug/access-token-operator

## check-docs: fail when a generated reference page in docs/reference/ differs from its source (run `make docs`)
check-docs:
	hack/ensure-packages.sh python3-yaml
	$(CARGO) build --quiet
	python3 hack/docs/generate.py --binary target/debug/access-token-operator --check

## fuzz: bounded coverage-guided run of each fuzz target in fuzz/ (nightly toolchain + cargo-fuzz; FUZZ_RUNS executions each)
FUZZ_RUNS ?= 5000000
fuzz:
	mkdir -p fuzz/corpus/token_parse fuzz/corpus/token_review_body
	$(CARGO) +nightly fuzz run token_parse fuzz/corpus/token_parse fuzz/seeds/token_parse -- \
		-runs=$(FUZZ_RUNS) -max_len=128 -print_final_stats=1
	$(CARGO) +nightly fuzz run token_review_body fuzz/corpus/token_review_body fuzz/seeds/token_review_body -- \
		-runs=$(FUZZ_RUNS) -max_len=4096 -dict=fuzz/token_review.dict -print_final_stats=1

## crds: regenerate crds/ (and the Helm chart's copy) from the Rust types
crds:
	$(CARGO) run --quiet -- crd > crds/access-token-operator.yaml
	cp crds/access-token-operator.yaml charts/access-token-operator/files/crds.yaml

## browser: Debian's chromium and chromium-driver, for the console's browser tests (tests/integration/console/web_console.rs)
browser:
	hack/ensure-packages.sh chromium chromium-driver

## control-plane: build (once, cached outside the repo) kube-apiserver, kube-controller-manager, kubectl, etcd
control-plane:
	hack/control-plane/build.sh >/dev/null

## helm: build (once, cached outside the repo) the pinned Helm; prints nothing
helm:
	hack/helm/build.sh >/dev/null
