#!/bin/sh
# tests/sh/test_report.sh: report.html of a run directory (lua/moco/report.lua), rendered by
# a real browser: the quickstart runs on a tiny subset, then headless Chromium (Debian's
# `chromium`, installed by `make deps` with the test packages) loads the page with the network
# off and a script the test adds to a copy of the page reports, for every image, whether it
# decoded.  The page itself must need nothing: no script, no http(s) reference, every image
# a data: URI.  Chromium missing is a FAIL (CI installs it), never a skip.
. "$(dirname "$0")/lib.sh"
need_exe

# The quickstart with its default pipeline on 512 images: one epoch, a 500-image kNN bank.
"$exe" recipes/quickstart.lua --epochs 1 --train-subset 512 --batch-size 64 --moco-k 512 --width 0.25 \
  --knn-subset 500 --knn-k 20 --workers 1 --out "$tmp/run" >"$tmp/q.out" 2>&1
ok "the quickstart runs on a tiny subset" $? "$(tail -3 "$tmp/q.out")"
page="$tmp/run/report.html"
[ -s "$page" ]
ok "report.html written" $? "$(ls "$tmp/run")"

# Self-contained: no script, nothing fetched, images inline.
ok "no script in the page" "$(! grep -qi '<script' "$page"; echo $?)" "found a <script>"
ok "no network reference" "$(! grep -qiE '(src|href)="(https?:)?//' "$page"; echo $?)" "$(grep -oiE '(src|href)="[^"]{0,40}' "$page" | head -3)"
images=$(grep -o '<img src="data:image/png;base64,' "$page" | wc -l)
ok "curves, augmentation and neighbours embedded as data: URIs" "$([ "$images" -eq 3 ]; echo $?)" "$images images"
ok "the final accuracies are in it" "$(grep -q 'kNN top-1 on the test set' "$page" && grep -q 'standardised raw pixels' "$page"; echo $?)" "no result rows"
ok "the configuration is in it" "$(grep -q '<th>--moco-k</th><td>512</td>' "$page"; echo $?)" "no --moco-k row"

browser=""
for b in chromium chromium-browser; do command -v "$b" >/dev/null 2>&1 && browser=$b && break; done
if [ -z "$browser" ]; then
  fail "headless Chromium renders report.html" "chromium is not installed (make deps installs the test packages)"
  exit 1
fi
# The probe: on load, each image's state goes into an attribute that --dump-dom prints.
sed 's|</body>|<script>window.addEventListener("load", function () { var r = []; for (var i = 0; i < document.images.length; i++) { var m = document.images[i]; r.push(m.complete \&\& m.naturalWidth > 0 ? m.naturalWidth + "x" + m.naturalHeight : "broken"); } document.body.setAttribute("data-images", r.join(" ")); });</script></body>|' \
  "$page" >"$tmp/run/probe.html"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$tmp/profile" --virtual-time-budget=5000 \
  --dump-dom "file://$tmp/run/probe.html" >"$tmp/dom.html" 2>"$tmp/chromium.err"
rc=$?
states=$(sed -n 's/.*data-images="\([^"]*\)".*/\1/p' "$tmp/dom.html")
ok "headless Chromium renders report.html" "$([ $rc -eq 0 ] && [ -n "$states" ]; echo $?)" "rc $rc: $(tail -3 "$tmp/chromium.err")"
broken=$(echo "$states" | tr ' ' '\n' | grep -c broken)
count=$(echo "$states" | wc -w)
ok "every image of the page loads in the browser ($states)" "$([ "$count" -eq 3 ] && [ "$broken" -eq 0 ]; echo $?)" "states: '$states'"
ok "the page's title is the run's" "$(grep -q '<title>quickstart: MoCo v2 on Fashion-MNIST' "$tmp/dom.html"; echo $?)" "$(grep -o '<title>[^<]*' "$tmp/dom.html")"
finish
