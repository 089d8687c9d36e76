-- tests/lua/test_doc.lua: the API reference (lua/moco/doc.lua) and what the REPL shows
-- (lua/moco/repl.lua): docs/api.md is exactly what doc.markdown() generates (the same
-- source as help()), every public function, class and method of the listed modules has an
-- entry and every entry names something that exists, help() finds objects by their class,
-- and values print readably (records as a table, a large module as a summary).
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local doc = require "moco.doc"
local repl = require "moco.repl"

local tests = {}

function tests.api_md_is_generated_from_the_same_source()
  local want = doc.markdown()
  local got = check.read_file("docs/api.md")
  local line = 0
  if got ~= want then
    local a, b = {}, {}
    for l in (got .. "\n"):gmatch("([^\n]*)\n") do a[#a + 1] = l end
    for l in (want .. "\n"):gmatch("([^\n]*)\n") do b[#b + 1] = l end
    for i = 1, math.max(#a, #b) do if a[i] ~= b[i] then line = i break end end
  end
  check.ok("docs/api.md == doc.markdown() (run `make docs` after changing lua/moco/doc.lua)", got == want,
           string.format("first difference at line %d", line))
end

function tests.every_public_function_has_an_entry()
  local missing, stale = doc.coverage()
  check.eq("public functions, classes and methods without an entry", table.concat(missing, ", "), "")
  check.eq("entries naming nothing", table.concat(stale, ", "), "")
  check.ok("the reference is not trivially small", #doc.entries > 250, #doc.entries .. " entries")
  -- the check can fail: an entry taken away is reported
  local saved = {}
  for i, e in ipairs(doc.entries) do saved[i] = e end
  package.loaded["moco.doc"] = nil
  local fresh = require "moco.doc"
  for i = #fresh.entries, 1, -1 do
    if fresh.entries[i].name == "moco.eval.knn" or fresh.entries[i].name == "moco.Tensor:sum" then table.remove(fresh.entries, i) end
  end
  local m = fresh.coverage()
  check.eq("coverage notices two missing entries", table.concat(m, ", "), "moco.Tensor:sum, moco.eval.knn")
  package.loaded["moco.doc"] = doc
end

function tests.help_finds_objects()
  local function help(x) return doc.help_text(x, true) end
  check.ok("a function", help(moco.zeros):find("^moco.zeros%(shape%)") ~= nil, help(moco.zeros))
  check.ok("a tensor: its class and methods", help(moco.zeros{2}):find("an instance of moco.Tensor", 1, true)
           and help(moco.zeros{2}):find("t:sum()", 1, true), help(moco.zeros{2}):sub(1, 200))
  check.ok("a tensor method", help(moco.zeros{1}.sum):find("^t:sum%(%)") ~= nil, help(moco.zeros{1}.sum))
  local conv = moco.nn.Conv2d(1, 2, 3)
  check.ok("a layer: its class, and where the inherited methods are", help(conv):find("nn.Conv2d(", 1, true)
           and help(conv):find("those of moco.nn.Module", 1, true), help(conv))
  local g = moco.Generator(1)
  check.ok("a generator", help(g):find("an instance of moco.Generator", 1, true) ~= nil, help(g))
  check.ok("a module", help(moco.data):find("moco.data.Loader", 1, true) ~= nil, help(moco.data))
  check.ok("a name", help("moco.nn.Linear"):find("^nn.Linear%(") ~= nil, help("moco.nn.Linear"))
  check.ok("a search", help("kNN"):find("moco.eval.knn", 1, true) ~= nil, help("kNN"))
  check.ok("help() lists the modules", doc.help_text(nil, false):find("moco.checkpoint", 1, true) ~= nil)
  check.ok("something else", help(42):find("not part of moco's API", 1, true) ~= nil, help(42))
  local T = moco.transforms
  check.ok("a transform", help(T.ToTensor()):find("moco.transforms.Transform", 1, true) ~= nil, help(T.ToTensor()))
end

function tests.values_print_readably()
  local history = { { epoch = 0, loss = 7.25, acc1 = 10.5, lr = 0.06, sums = { loss = 1 } },
                    { epoch = 1, loss = 6.5, acc1 = 20.25, lr = 0.05 } }
  local text = repl.format(history)
  local first = text:match("^[^\n]*")
  check.ok("a history prints as a table with a header", first:find("epoch") and first:find("loss") and first:find("acc1")
           and text:find("\n    1%s+6.5%s+20.25") and text:find("(2 records)", 1, true), text)
  check.ok("... without the nested sums", not text:find("sums"), text)
  check.eq("a list", repl.format{ 1, 2, 3 }, "{1, 2, 3}")
  check.eq("a record", repl.format{ lr = 0.03, schedule = { 120, 160 }, name = "x" }, '{lr = 0.03, name = "x", schedule = {120, 160}}')
  check.eq("an empty table", repl.format{}, "{}")
  local classes = repl.format(moco.data.FashionMNIST{ train = false }.classes)
  check.ok("a class list", classes:find('"T-shirt/top", "Trouser"', 1, true) and classes:find("(10 items)", 1, true), classes)
  local small = repl.format(moco.nn.Linear(2, 3))
  check.ok("a small module: its layers and parameter count", small:find("Linear(in_features=2", 1, true)
           and small:find("(9 parameters)", 1, true), small)
  local big = repl.format(moco.models.resnet50{})
  local _, lines = big:gsub("\n", "")
  check.ok("a ResNet-50: a summary with the parameter count", lines < 20 and big:find("25,557,032 parameters", 1, true)
           and big:find("layer3%s+Sequential of 6 Bottleneck"), big)
  check.ok("tostring still lists every layer", select(2, tostring(moco.models.resnet50{}):gsub("\n", "")) > 150)
  local model = moco.MoCo{ arch = "resnet18", dim = 16, K = 64, width = 0.25 }
  local summary = repl.format(model)
  local _, mlines = summary:gsub("\n", "")
  check.ok("a MoCo model: a summary, not 230 lines", mlines < 10 and summary:find("queue      [16, 64]", 1, true)
           and summary:find("encoder_q  ResNet resnet18", 1, true), summary)
  check.ok("a documented function prints its signature", repl.format(moco.zeros):find("moco.zeros(shape)", 1, true) ~= nil)
end

check.run(tests)
