# picpipe: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
DEMO := demo-out
SHELL := /bin/bash
#: The real PicGo-Core server and its S3 plugin, for tests/test_picgo_compat.py (installed once).
NPM := .cache/npm
PICGO := picgo@3.1.0 picgo-plugin-s3@1.5.2

.PHONY: install test demo bench bench-compress lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

test: install
	@command -v rclone >/dev/null && [ -x /usr/sbin/apache2 ] && [ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] && \
	  [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null && command -v zsh >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone apache2-bin \
	    fonts-wqy-microhei openssh-server openssh-client zsh; } || \
	  echo "test: rclone, apache2, sshd, zsh or a CJK font missing (not root): their tests are skipped"
	@[ -d $(NPM)/node_modules/picgo-plugin-s3 ] || \
	  { command -v npm >/dev/null && npm install --prefix $(NPM) --no-save --no-audit --no-fund --loglevel=error $(PICGO); } || \
	  echo "test: npm missing or offline: the side-by-side tests with PicGo are skipped"
	$(BIN)/python -m pytest -q

demo: install
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	@echo "== 1. sample images -> pp-compress -> pp-upload --host local (a folder with file:// URLs)"
	$(BIN)/python -m picpipe.demo images $(DEMO)/images | $(BIN)/pp-compress --out $(DEMO)/compressed | PICPIPE_LOCAL_DIR=$(DEMO)/host $(BIN)/pp-upload --host local --ledger $(DEMO)/ledger.jsonl > $(DEMO)/uploaded.jsonl
	$(BIN)/pp-link --template '   $$fileName$$extName: {compress.before} -> {compress.after} bytes ({compress.method}, SSIMULACRA2 {compress.ssimulacra2})' < $(DEMO)/uploaded.jsonl
	@echo "== 2. record them in the ledger and print Markdown links"
	$(BIN)/pp-mark --ledger $(DEMO)/ledger.jsonl < $(DEMO)/uploaded.jsonl | $(BIN)/pp-link --md | tee $(DEMO)/post.md
	@echo "== 3. ask the ledger: where did the screenshot go?"
	$(BIN)/pp-mark --ledger $(DEMO)/ledger.jsonl find --source '截图*' | $(BIN)/pp-link --template '$$fileName$$extName -> $$url ({width}x{height}, sha256 {sha256})'
	@echo "== 4. the CDN moved: rewrite every link"
	$(BIN)/pp-mark --ledger $(DEMO)/ledger.jsonl find | $(BIN)/pp-link --html --rewrite "file://$(CURDIR)/$(DEMO)/host/=https://img.example.com/"
	@echo "== 5. bad input is reported, the rest goes through, exit status 1"
	printf '{"url": "https://img.example.com/ok.png"}\n{"url": oops}\n' | $(BIN)/pp-link --md; echo "exit status $$?"
	@echo "== 6. back the originals up to WebDAV (a local WsgiDAV server): check the target, copy, copy again"
	@# The server is a coprocess reading our stdin: it stops when this shell exits, and the trap kills it first.
	@set -o pipefail; export PICPIPE_DEMO_DAV_TYPE=webdav PICPIPE_DEMO_DAV_USER=demo PICPIPE_DEMO_DAV_PASSWORD=demo-app-password; \
	coproc DAV { exec $(BIN)/python -m picpipe.demo dav $(DEMO)/dav; }; server=$$DAV_PID; \
	trap 'kill $$server 2>/dev/null; wait $$server' EXIT; \
	read -r url <&"$${DAV[0]}" && export PICPIPE_DEMO_DAV_URL="$${url}backup/" && \
	echo "   WsgiDAV serves $(DEMO)/dav at $$url; profile demo-dav: PICPIPE_DEMO_DAV_{TYPE,URL,USER,PASSWORD}" && \
	echo "$(BIN)/pp-davtest --target demo-dav" && $(BIN)/pp-davtest --target demo-dav && \
	echo "$(BIN)/pp-backup --to demo-dav --ledger $(DEMO)/ledger.jsonl < $(DEMO)/uploaded.jsonl | $(BIN)/pp-link ..." && \
	$(BIN)/pp-backup --to demo-dav --ledger $(DEMO)/ledger.jsonl < $(DEMO)/uploaded.jsonl | \
	  $(BIN)/pp-link --template '   $$fileName$$extName -> {backups.0.location} ({backups.0.size} bytes)' && \
	echo "   the same again: the ledger knows every copy, no request is sent" && \
	$(BIN)/pp-backup --to demo-dav --ledger $(DEMO)/ledger.jsonl < $(DEMO)/uploaded.jsonl > /dev/null && \
	echo "== 7. the image host dies ($(DEMO)/host is deleted): repair $(DEMO)/post.md from the backups onto a new host" && \
	rm -rf $(DEMO)/host && export PICPIPE_NEWHOST_TYPE=local PICPIPE_NEWHOST_DIR=$(DEMO)/new-host && \
	echo "pp-mark check | pp-backup restore | pp-upload --host newhost | pp-mark | pp-rewrite $(DEMO)/post.md" && \
	{ $(BIN)/pp-mark --ledger $(DEMO)/ledger.jsonl check -q | $(BIN)/pp-backup restore --out $(DEMO)/restored | \
	  $(BIN)/pp-upload --host newhost --ledger $(DEMO)/ledger.jsonl | $(BIN)/pp-mark --ledger $(DEMO)/ledger.jsonl | \
	  $(BIN)/pp-rewrite $(DEMO)/post.md; status="$${PIPESTATUS[*]}"; } && \
	echo "   exit statuses: $$status (pp-mark check: 1 = it found the dead links)" && [ "$$status" = "1 0 0 0 0" ] && \
	echo "   $(DEMO)/post.md now (the old one is $(DEMO)/post.md.bak):" && cat $(DEMO)/post.md
	@echo "== done: $(DEMO)/post.md, $(DEMO)/ledger.jsonl, $(DEMO)/dav/backup/, $(DEMO)/new-host/"

bench: install
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/ledger_bench.py
	$(BIN)/python bench/server_bench.py
	$(BIN)/python -m pip install --quiet jsonlines && $(BIN)/python bench/jsonlines_bench.py
	$(MAKE) bench-compress

# pp-compress against sharp, pngquant and cwebp; judged by SSIMULACRA2 (PyPI, or libjxl's C++ tool named
# by BENCH_SSIMULACRA2) and butteraugli (Debian's libjxl-devtools)
bench-compress: install
	@command -v chromium >/dev/null && command -v pngquant >/dev/null && command -v cwebp >/dev/null && \
	  command -v butteraugli_main >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium pngquant webp libjxl-devtools; } || \
	  echo "bench: chromium, pngquant, cwebp or butteraugli_main missing (not root): those rows, screenshots or scores are left out"
	$(BIN)/python bench/compress_bench.py
	@command -v rclone >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone; } || \
	  echo "bench: rclone missing (not root): the pp-upload and pp-backup comparisons are left out"
	$(BIN)/python bench/upload_bench.py
	$(BIN)/python bench/backup_bench.py

lint: install
	$(BIN)/ruff check picpipe tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache *.egg-info
