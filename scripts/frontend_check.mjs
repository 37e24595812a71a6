// The node pack in the real ComfyUI frontend, driven by headless Chromium (a check to run by hand, not in CI).
//
// Needs a running ComfyUI with this pack in custom_nodes/ and the tiny models in models/ (e.g.
// `python3 scripts/comfyui_smoke.py --comfyui /tmp/comfyui --port 8188 --keep-running`), Chromium
// (Debian: apt-get install chromium) and playwright-core from npm in a scratch folder outside this repository:
//
//     mkdir -p /tmp/fe && cd /tmp/fe && npm install playwright-core
//     cd /tmp/fe && node /path/to/ComfyUI-EmoCAST/scripts/frontend_check.mjs [--url http://127.0.0.1:8188]
//         [--chromium /usr/bin/chromium] [--screenshots DIR] [--run] [--run-timeout 900]
//
// playwright-core is resolved from the current folder; Chromium runs headless with a fresh profile and no
// background networking. For every UI workflow in example_workflows/ it loads the graph with app.loadGraphData (the
// frontend's own missing-node check), checks no node is missing or broken, the widget values survive a
// load / serialize round trip and the layout holds as the frontend draws it (layoutCheck: no two nodes closer than
// MIN_GAP, title bars, "EmoCAST" badges and the sizes the frontend computes included; every Markdown note shows its
// whole text). Missing models (issue 15): the frontend's Missing Models dialog (shown by loadGraphData when the
// setting Comfy.Workflow.ShowMissingModelsWarning is on) must list, as "directory / name" with the URL, every
// properties.models entry the frontend takes (its name is one of the node's widget values: the selected model)
// that the server lacks (GET /api/experiment/models/<directory>; on the tiny-model setup all the real models), and
// no folder may be unknown to the server; the entries it cannot take (the antelopev2 files of Load Face Analysis,
// whose widget names the pack folder, not a file) are reported under missing_models.*.not_listable. It picks
// presets of EmoCAST Encode Emotion from the canvas's combo menu and
// checks the prompt follows (locked and faded once for a preset, editable for "custom", typed text reaches the
// prompt). With --run it empties the server's cache (POST /free), switches the basic workflow to the tiny
// models (128 px, 1 step, 1 s of speech), presses Run and checks EmoCAST Encode Audio shows its frames /
// duration line, which stays out of the saved workflow and the prompt, and the layout again (the sampler's preview
// and the video have grown their nodes); live previews (issue 14): every image the server sends while a node runs
// (the api's b_preview_with_metadata events) is recorded, and EmoCAST Sample must get at least one, which the
// frontend puts on the node (app.nodePreviewImages), and their number must be one a clip (its last frame) plus,
// when the server runs with a --preview-method (comfyui_smoke.py starts it with latent2rgb), one a sampling step
// (ComfyUI's latent preview). Every browser console message and page
// error is recorded, ours (this pack's web/js, or naming EmoCAST) apart from ComfyUI's own. With --screenshots
// DIR it writes basic.png and emotion_schedule.png (1600 px wide, the whole graph at ~0.6 zoom, the frontend's
// menus included) and, with --run, basic_preview.png (EmoCAST Sample alone, mid-run, showing its live preview)
// and basic_result.png (docs/images/comfyui_basic.png, comfyui_emotion_schedule.png, comfyui_sample_preview.png
// and comfyui_basic_run.png are these, through `pngquant 256`). Prints a JSON report; exit status 0 when every
// check passed.
import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PACK = "ComfyUI-EmoCAST";
const { values: opt } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:8188" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    workflows: { type: "string", default: path.join(ROOT, "example_workflows") },
    screenshots: { type: "string" },
    run: { type: "boolean", default: false },
    "run-timeout": { type: "string", default: "900" },
  },
});
const require = createRequire(path.join(process.cwd(), "noop.js"));
const { chromium } = require("playwright-core");

// the tiny models and inputs scripts/comfyui_smoke.py puts in place, by widget name
const TINY = {
  image: "emocast_demo_portrait.png", audio: "emocast_demo_speech_1s.wav", ckpt_name: "emocast_tiny.safetensors",
  vae_name: "emocast_smoke_sd_vae_random.safetensors", clip_name: "emocast_tiny_clip.safetensors",
  insightface: "emocast_tiny", wav2vec2: "emocast_tiny_wav2vec2.safetensors", resolution: 128, frames_per_clip: 4,
  steps: 1,
};
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const report = { url: opt.url, checks: {}, workflows: {}, console: { ours: [], comfyui: [] }, page_errors: [] };
const check = (name, ok, detail) => {
  report.checks[name] = Boolean(ok);
  if (!ok && detail !== undefined) (report.failures ??= {})[name] = detail;
};

// ours: logged from this pack's web/js, or naming it (ComfyUI's own messages name our workflow files in lower case)
const ours = (text, url) => `${url ?? ""}\n${text ?? ""}`.includes(`/extensions/${PACK}/`) || /EmoCAST/.test(text ?? "");
const userDir = fs.mkdtempSync(path.join(os.tmpdir(), "emocast-chromium-"));
const context = await chromium.launchPersistentContext(userDir, {
  executablePath: opt.chromium, headless: true, args: FLAGS, viewport: { width: 1600, height: 1000 },
}).catch((e) => {
  fs.rmSync(userDir, { recursive: true, force: true });
  throw e;
});
const page = context.pages()[0] ?? (await context.newPage());
page.on("console", (m) => {
  const where = m.location()?.url;
  const entry = { type: m.type(), text: m.text(), url: where };
  report.console[ours(m.text(), where) ? "ours" : "comfyui"].push(entry);
});
page.on("pageerror", (e) => report.page_errors.push({ message: e.message, stack: e.stack, ours: ours(e.stack) }));

async function closeDialogs() {
  for (let i = 0; i < 3; i++) {
    const open = await page.locator(".p-dialog").count();
    if (!open) return;
    await page.keyboard.press("Escape");
    await page.waitForTimeout(300);
  }
}

/**
 * Frames nodes (all of them by default) in the canvas, like Fit View but tighter, and never below `minScale`.
 * Fit View of the frontend leaves a wide margin, and under ~0.57 zoom the canvas draws no text or widgets.
 */
async function frame({ ids = null, margin = 24, maxScale = 1, minScale = 0.6, top = false } = {}) {
  const scale = await page.evaluate(({ ids, margin, maxScale, minScale, top }) => {
    const nodes = app.graph.nodes.filter((n) => !ids || ids.includes(n.id));
    const b = [Infinity, Infinity, -Infinity, -Infinity];
    for (const n of nodes) {
      const [x, y, w, h] = n.boundingRect;
      b[0] = Math.min(b[0], x); b[1] = Math.min(b[1], y); b[2] = Math.max(b[2], x + w); b[3] = Math.max(b[3], y + h);
    }
    const ds = app.canvas.ds;
    const { width, height } = app.canvas.canvas.getBoundingClientRect();
    const w = b[2] - b[0] + 2 * margin, h = b[3] - b[1] + 2 * margin;
    ds.scale = Math.max(minScale, Math.min(maxScale, width / w, height / h));
    ds.offset[0] = (width / ds.scale - w) / 2 - b[0] + margin;
    ds.offset[1] = (top ? 0 : (height / ds.scale - h) / 2) - b[1] + margin;
    app.canvas.setDirty(true, true);
    return ds.scale;
  }, { ids, margin, maxScale, minScale, top });
  await page.waitForTimeout(800);
  return scale;
}

/** The page, cut below the graph's lowest node (with the frontend's menus and side bar), or around one node. */
async function screenshot(name, nodeId = null) {
  if (!opt.screenshots) return;
  fs.mkdirSync(opt.screenshots, { recursive: true });
  await page.mouse.move(1599, 999); // no hover highlight on a node
  await page.waitForTimeout(300);
  const box = await page.evaluate((id) => {
    const nodes = id === null ? app.graph.nodes : [app.graph.getNodeById(id)];
    const [x, y] = app.canvasPosToClientPos([Math.min(...nodes.map((n) => n.boundingRect[0])),
                                             Math.min(...nodes.map((n) => n.boundingRect[1]))]);
    const [right, bottom] = app.canvasPosToClientPos([
      Math.max(...nodes.map((n) => n.boundingRect[0] + n.boundingRect[2])),
      Math.max(...nodes.map((n) => n.boundingRect[1] + n.boundingRect[3]))]);
    return { x, y, right, bottom };
  }, nodeId);
  const { width, height } = page.viewportSize();
  const m = 24;
  const clip = nodeId === null ? { x: 0, y: 0, width, height: Math.min(height, Math.ceil(box.bottom + m)) } : {
    x: Math.max(0, Math.floor(box.x - m)), y: Math.max(0, Math.floor(box.y - 2 * m)), // the badge above the title
    width: Math.min(width, Math.ceil(box.right + m)) - Math.max(0, Math.floor(box.x - m)),
    height: Math.min(height, Math.ceil(box.bottom + m)) - Math.max(0, Math.floor(box.y - 2 * m)) };
  await page.screenshot({ path: path.join(opt.screenshots, name), clip });
  (report.screenshots ??= []).push(path.join(opt.screenshots, name));
}

/** Least clearance, in graph units, between two nodes' boxes (title bars and badges included). */
const MIN_GAP = 8;

/**
 * Checks the layout as the frontend draws it: no two nodes closer than MIN_GAP and every Markdown note showing its
 * whole text. A node's box is its title bar, the source badges above it (right-aligned, NODE_TITLE_HEIGHT + 2 px
 * over the body: the "EmoCAST" badge), and its body at the larger of the stored size and node.computeSize() (what
 * its widgets need: a preview image after a run, the length line of Encode Audio). A note is framed at up to 1x so
 * its DOM widget is laid out, then its rendered text must not overflow the widget (scrollWidth / scrollHeight).
 */
async function layoutCheck(label) {
  const out = await page.evaluate((minGap) => {
    const TH = LiteGraph.NODE_TITLE_HEIGHT, GAP = 2, ctx = app.canvas.ctx;
    const round = (v) => Math.round(v);
    const boxes = app.graph._nodes.map((n) => {
      const [cw, ch] = n.computeSize();
      const w = Math.max(n.size[0], cw), h = Math.max(n.size[1], ch);
      const b = { id: n.id, title: n.title, x0: n.pos[0], y0: n.pos[1] - TH, x1: n.pos[0] + w, y1: n.pos[1] + h,
                  size: Array.from(n.size, round), computed: [round(cw), round(ch)] };
      const badges = (n.badges ?? []).map((x) => (typeof x === "function" ? x() : x)).filter((x) => x?.visible);
      if (badges.length) {
        const width = badges.reduce((a, x) => a + x.getWidth(ctx) + GAP, 0);
        b.y0 = n.pos[1] - TH - GAP - Math.max(...badges.map((x) => x.height));
        if (n.badgePosition === "top-left") b.x1 = Math.max(b.x1, n.pos[0] + width);
        else b.x0 = Math.min(b.x0, n.pos[0] + w - width);
      }
      return b;
    });
    const close = [];
    for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i], b = boxes[j];
        const gap = Math.max(b.x0 - a.x1, a.x0 - b.x1, b.y0 - a.y1, a.y0 - b.y1);
        if (gap < minGap) close.push({ a: `${a.id} ${a.title}`, b: `${b.id} ${b.title}`, gap: round(gap) });
      }
    }
    const extent = [Math.min(...boxes.map((b) => b.x0)), Math.min(...boxes.map((b) => b.y0)),
                    Math.max(...boxes.map((b) => b.x1)), Math.max(...boxes.map((b) => b.y1))];
    const grown = boxes.filter((b) => b.computed[0] > b.size[0] || b.computed[1] > b.size[1])
      .map((b) => ({ id: b.id, title: b.title, size: b.size, computed: b.computed }));
    const notes = app.graph._nodes
      .filter((n) => n.widgets?.some((w) => w.element?.classList.contains("comfy-markdown"))).map((n) => n.id);
    return { too_close: close, grown, notes, extent: [round(extent[2] - extent[0]), round(extent[3] - extent[1])] };
  }, MIN_GAP);
  const notes = [];
  for (const id of out.notes) {
    await frame({ ids: [id], maxScale: 1, minScale: 0.1 });
    notes.push(await page.evaluate((id) => {
      const node = app.graph.getNodeById(id);
      const el = node.widgets.find((w) => w.element?.classList.contains("comfy-markdown")).element;
      const text = el.querySelector(".tiptap") ?? el;
      // the height the text takes (its last block's bottom edge and the padding), below the box when it fits
      const rect = text.getBoundingClientRect(), top = rect.top, zoom = rect.height / (text.offsetHeight || 1);
      const bottom = Math.max(top, ...[...text.children].map((e) => e.getBoundingClientRect().bottom +
                                                             parseFloat(getComputedStyle(e).marginBottom) * zoom));
      const used = (bottom - top) / zoom + parseFloat(getComputedStyle(text).paddingBottom);
      const r = { id, title: node.title, size: Array.from(node.size, Math.round),
                  content: [text.scrollWidth, text.scrollHeight], box: [text.clientWidth, text.clientHeight],
                  text_height: Math.ceil(used) };
      r.fits = r.box[1] > 0 && r.content[0] <= r.box[0] + 1 && r.content[1] <= r.box[1] + 1;
      return r;
    }, id));
  }
  out.notes = notes;
  (report.layout ??= {})[label] = out;
  check(`${label}: no node overlaps another (>= ${MIN_GAP} apart, badges and computed sizes included)`,
        out.too_close.length === 0, out.too_close);
  check(`${label}: every note shows its whole text`, notes.every((n) => n.fits), notes.filter((n) => !n.fits));
  return out;
}

/**
 * What the frontend's Missing Models dialog should list for a UI workflow: the properties.models entries it takes
 * (getSelectedModelsMetadata: only those whose name is one of the node's string widget values, so the selected
 * model; the workflow's top-level "models" too, unfiltered), one per URL, less those the server has in the folder
 * (GET /api/experiment/models/<directory>, the listing the frontend's model store reads).
 */
async function expectedMissingModels(graph) {
  const taken = [], ignored = [];
  for (const node of graph.nodes) {
    const raw = Array.isArray(node.widgets_values) ? node.widgets_values : Object.values(node.widgets_values ?? {});
    const values = new Set(raw.filter((v) => typeof v === "string" && v.trim()));
    for (const m of node.properties?.models ?? []) {
      if (values.has(m.name)) taken.push({ ...m, node: `${node.id} ${node.type}` });
      else ignored.push({ ...m, node: `${node.id} ${node.type}`,
                          why: `not a widget value of the node (${JSON.stringify([...values])})` });
    }
  }
  taken.push(...(graph.models ?? []).map((m) => ({ ...m, node: "workflow" })));
  const unique = [...new Map(taken.filter((m) => m.url || m.hash).map((m) => [m.url || m.hash, m])).values()];
  const folders = {};
  for (const dir of new Set(unique.map((m) => m.directory))) {
    const r = await fetch(`${opt.url}/api/experiment/models/${encodeURIComponent(dir)}`);
    folders[dir] = r.ok ? (await r.json()).map((x) => x.name) : null;
  }
  const present = unique.filter((m) => folders[m.directory]?.includes(m.name));
  const missing = unique.filter((m) => !folders[m.directory]?.includes(m.name));
  return { missing, present, ignored, folders };
}

/** Checks the Missing Models dialog of one workflow against what it should list (expectedMissingModels). */
function checkMissingModels(f, rows, want) {
  const label = (m) => `${m.directory} / ${m.name}`;
  const byLabel = Object.fromEntries((rows ?? []).map((r) => [r.label, r]));
  const out = { listed: rows, expected: want.missing.map((m) => ({ label: label(m), url: m.url })),
                installed: want.present.map(label),
                not_listable: want.ignored.map((m) => ({ label: label(m), url: m.url, node: m.node, why: m.why })) };
  const absent = want.missing.filter((m) => !byLabel[label(m)]);
  const wrongUrl = want.missing.filter((m) => byLabel[label(m)] && byLabel[label(m)].url !== m.url);
  const extra = (rows ?? []).filter((r) => !want.missing.some((m) => label(m) === r.label));
  check(`${f}: the Missing Models dialog lists every absent model of properties.models, with its URL`,
        absent.length === 0 && wrongUrl.length === 0 && extra.length === 0 && (rows !== null || !want.missing.length),
        { not_listed: absent.map(label), wrong_url: wrongUrl.map(label), unexpected: extra, dialog: rows !== null });
  const invalid = (rows ?? []).filter((r) => /Invalid directory/.test(r.error ?? ""));
  check(`${f}: every listed model's folder is known to the server`, invalid.length === 0, invalid);
  return out;
}

/** Loads a UI workflow the way the frontend does; returns the frontend's missing node types and node states. */
async function loadWorkflow(file, name = path.basename(file, ".json")) {
  const graph = JSON.parse(fs.readFileSync(file, "utf8"));
  return page.evaluate(async ({ graph, name }) => {
    window.__emocastMissing = null;
    await app.loadGraphData(graph, true, true, name);
    await new Promise((r) => setTimeout(r, 500));
    const byId = Object.fromEntries(graph.nodes.map((n) => [n.id, n]));
    const nodes = app.graph.nodes.map((n) => {
      const saved = byId[n.id];
      const values = n.serialize().widgets_values ?? [];
      return {
        id: n.id, type: n.type, title: n.title,
        registered: n.type in LiteGraph.registered_node_types,
        has_errors: Boolean(n.has_errors),
        widgets_match: JSON.stringify(values) === JSON.stringify(saved?.widgets_values ?? []),
        widgets_values: values, saved_widgets_values: saved?.widgets_values ?? [],
      };
    });
    const dialogs = [...document.querySelectorAll(".p-dialog")].map((d) => d.innerText.slice(0, 300));
    // the Missing Models dialog: one FileDownload row a model (label "directory / name", the URL as its title and
    // the Download button's, an error message where the frontend will not download it)
    const listbox = document.querySelector(".comfy-missing-models");
    const missingModels = listbox && [...listbox.querySelectorAll("li[role=option], li")].map((li) => {
      const span = li.querySelector("span[title]");
      const buttons = [...li.querySelectorAll("button")];
      return { label: span?.textContent.trim() ?? li.innerText.split("\n")[0], url: span?.title ?? null,
               error: li.querySelector(".p-message")?.innerText.trim() || null,
               download_title: buttons[0]?.title ?? null, download_disabled: buttons[0]?.disabled ?? null };
    });
    return { missing: window.__emocastMissing ?? [], nodes, dialogs, missing_models: missingModels ?? null,
             saved_nodes: graph.nodes.length,
             links: app.graph.links?.size ?? Object.keys(app.graph.links ?? {}).length,
             saved_links: graph.links.length };
  }, { graph, name });
}

/** A widget's centre in client (page) pixels. */
async function widgetPoint(nodeId, widgetName) {
  return page.evaluate(({ nodeId, widgetName }) => {
    const node = app.graph.getNodeById(nodeId);
    const w = node.widgets.find((x) => x.name === widgetName);
    const h = w.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT;
    const [x, y] = app.canvasPosToClientPos([node.pos[0] + node.size[0] / 2, node.pos[1] + w.y + h / 2]);
    return { x, y };
  }, { nodeId, widgetName });
}

async function emotionState(nodeId) {
  return page.evaluate((nodeId) => {
    const node = app.graph.getNodeById(nodeId);
    const w = (name) => node.widgets.find((x) => x.name === name);
    const prompt = w("prompt");
    const el = prompt.element ?? prompt.inputEl;
    const wrapper = el?.closest(".dom-widget") ?? el?.parentElement;
    let opacity = 1; // what the eye gets: the element's opacity times its ancestors'
    for (let e = el; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
    return { preset: w("preset").value, prompt: prompt.value, disabled: Boolean(prompt.disabled),
             readOnly: el?.readOnly ?? null, textarea: el?.value ?? null,
             pointerEvents: wrapper ? getComputedStyle(wrapper).pointerEvents : null,
             opacity: Math.round(opacity * 100) / 100 };
  }, nodeId);
}

/** Picks a combo entry through the canvas: click the widget, click the entry of the context menu. */
async function pickCombo(nodeId, widgetName, value) {
  await frame({ ids: [nodeId], maxScale: 1.5 });
  const { x, y } = await widgetPoint(nodeId, widgetName);
  await page.mouse.click(x, y);
  const entry = page.locator(".litecontextmenu .litemenu-entry", { hasText: new RegExp(`^${value}$`) });
  try {
    await entry.first().waitFor({ timeout: 3000 });
    await entry.first().click();
    await page.waitForTimeout(500);
    return "canvas menu";
  } catch {
    await page.keyboard.press("Escape");
    await page.evaluate(({ nodeId, widgetName, value }) => {
      const node = app.graph.getNodeById(nodeId);
      node.widgets.find((x) => x.name === widgetName).setValue(value, { node, canvas: app.canvas });
    }, { nodeId, widgetName, value });
    await page.waitForTimeout(500);
    return "widget.setValue (the menu did not open)";
  }
}

async function exerciseEncodeEmotion(presets) {
  const id = await page.evaluate(() => app.graph.nodes.find((n) => n.type === "EmoCAST_EncodeEmotion")?.id);
  const out = { node: id };
  if (id === undefined) return check("basic: has EmoCAST Encode Emotion", false, "no such node");
  await frame({ ids: [id], maxScale: 1.5 });
  out.loaded = await emotionState(id);
  check("Encode Emotion: loaded preset locks its prompt",
        out.loaded.prompt === presets[out.loaded.preset] && out.loaded.disabled && out.loaded.readOnly, out.loaded);
  out.how = await pickCombo(id, "preset", "sad");
  out.sad = await emotionState(id);
  check("Encode Emotion: choosing 'sad' sets and locks the prompt",
        out.sad.preset === "sad" && out.sad.prompt === presets.sad && out.sad.textarea === presets.sad &&
        out.sad.disabled && out.sad.readOnly && out.sad.pointerEvents === "none", out.sad);
  check("Encode Emotion: a locked prompt stays legible (faded once, to >= 0.5)", out.sad.opacity >= 0.5, out.sad);
  await pickCombo(id, "preset", "custom");
  out.custom = await emotionState(id);
  check("Encode Emotion: 'custom' keeps the text and unlocks it",
        out.custom.preset === "custom" && out.custom.prompt === presets.sad && !out.custom.disabled &&
        out.custom.readOnly === false && out.custom.pointerEvents === "auto" && out.custom.opacity === 1, out.custom);
  const typed = "A person is talking with calm, warm emotion.";
  const box = await page.evaluate((id) => {
    const p = app.graph.getNodeById(id).widgets.find((x) => x.name === "prompt");
    const r = (p.element ?? p.inputEl).getBoundingClientRect();
    return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
  }, id);
  await page.mouse.click(box.x, box.y); // a real click: reaches the textarea only when it is unlocked
  out.focused = await page.evaluate(() => document.activeElement?.tagName);
  if (out.focused === "TEXTAREA") {
    await page.keyboard.press("Control+A");
    await page.keyboard.type(typed);
    await page.waitForTimeout(300);
  }
  out.typed = await emotionState(id);
  const prompt = await page.evaluate(async (id) => (await app.graphToPrompt()).output[id]?.inputs, id);
  out.prompt_inputs = prompt;
  check("Encode Emotion: typing into the custom prompt reaches the queued prompt",
        out.typed.prompt === typed && prompt?.prompt === typed && prompt?.preset === "custom", out.typed);
  // a node added from the node library: the default preset fills the prompt
  out.created = await page.evaluate(async () => {
    const node = LiteGraph.createNode("EmoCAST_EncodeEmotion");
    node.pos = [0, -400];
    app.graph.add(node);
    await new Promise((r) => setTimeout(r, 500));
    const w = (name) => node.widgets.find((x) => x.name === name);
    const state = { preset: w("preset").value, prompt: w("prompt").value, disabled: Boolean(w("prompt").disabled) };
    app.graph.remove(node);
    return state;
  });
  check("Encode Emotion: a new node shows its default preset's prompt, locked",
        out.created.prompt === presets[out.created.preset] && out.created.disabled, out.created);
  return out;
}

async function runBasic(file) {
  await loadWorkflow(file, "emocast_basic (tiny models)");
  await closeDialogs(); // Missing Models: the real models the workflow names
  const setup = await page.evaluate((tiny) => {
    const problems = [];
    for (const node of app.graph.nodes) {
      for (const w of node.widgets ?? []) {
        if (!(w.name in tiny)) continue;
        const values = w.options?.values;
        const list = typeof values === "function" ? values() : values;
        if (Array.isArray(list) && !list.includes(tiny[w.name])) problems.push(`${node.type}.${w.name}: ${tiny[w.name]} not in ${JSON.stringify(list)}`);
        w.value = tiny[w.name];
        w.callback?.(w.value, app.canvas, node);
      }
    }
    window.__emocastEvents = [];
    const api = app.api ?? window.comfyAPI.api.api;
    for (const kind of ["executed", "execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(kind, (e) => window.__emocastEvents.push({ kind, detail: e.detail }));
    }
    // live previews: every image the server sends while a node runs (the frontend's own listener, registered
    // before this one, has already put it in app.nodePreviewImages, which the canvas draws on the node)
    window.__emocastPreviews = [];
    window.__emocastPlainPreviews = 0;
    api.addEventListener("b_preview", () => window.__emocastPlainPreviews++);
    api.addEventListener("b_preview_with_metadata", async (e) => {
      const { blob, displayNodeId, nodeId } = e.detail;
      const id = String(displayNodeId ?? nodeId);
      const shown = Object.entries(app.nodePreviewImages ?? {})
        .some(([k, v]) => k.split(":").pop() === id && v?.length);
      const entry = { node: id, type: blob.type, bytes: blob.size, on_node: shown };
      window.__emocastPreviews.push(entry);
      try {
        const bitmap = await createImageBitmap(blob);
        entry.size = [bitmap.width, bitmap.height];
        bitmap.close();
      } catch (err) {
        entry.size = String(err);
      }
      setTimeout(() => { entry.node_imgs = app.graph.getNodeById(Number(id))?.imgs?.length ?? 0; }, 500);
    });
    return problems;
  }, TINY);
  check("run: tiny models and inputs are offered by the combos", setup.length === 0, setup);
  const prompt = await page.evaluate(async () => (await app.graphToPrompt()).output);
  const audioNode = Object.entries(prompt).find(([, v]) => v.class_type === "EmoCAST_EncodeAudio")?.[0];
  // a cached node sends no "executed" again (ComfyUI replays only output nodes): empty the server's cache
  await fetch(`${opt.url}/api/free`, { method: "POST", headers: { "Content-Type": "application/json" },
                                        body: JSON.stringify({ free_memory: true }) });
  await page.waitForTimeout(3000);
  await frame();
  const sampler = await page.evaluate(() => String(app.graph.nodes.find((n) => n.type === "EmoCAST_Sample")?.id));
  await page.locator('[data-testid="queue-button"]').first().click();
  const t0 = Date.now();
  if (opt.screenshots) {
    // a screenshot while the sampler shows its preview (the second one: the first clip's frame is in)
    await page.waitForFunction((id) => window.__emocastPreviews.filter((p) => p.node === id).length >= 2 ||
                               window.__emocastEvents.some((e) => e.kind !== "executed"), sampler,
                               { timeout: Number(opt["run-timeout"]) * 1000, polling: 200 }).catch(() => {});
    await frame({ ids: [Number(sampler)], maxScale: 1 });
    await screenshot("basic_preview.png", Number(sampler));
  }
  const done = await page.waitForFunction(
    () => window.__emocastEvents.find((e) => e.kind !== "executed"), null,
    { timeout: Number(opt["run-timeout"]) * 1000, polling: 1000 }).then((h) => h.jsonValue());
  const out = { seconds: Math.round((Date.now() - t0) / 1000), end: done.kind };
  if (done.kind !== "execution_success") out.detail = done.detail;
  check("run: the basic workflow (tiny models) succeeds from the Run button", done.kind === "execution_success", out);
  await page.waitForTimeout(1000);
  out.encode_audio = await page.evaluate((id) => {
    const node = app.graph.getNodeById(Number(id));
    const info = node.widgets.find((w) => w.name === "emocast_length");
    return { text: info?.value ?? null, label: info?.label ?? null, widgets_values: node.serialize().widgets_values };
  }, audioNode);
  check("run: EmoCAST Encode Audio shows frames and duration",
        /^\d+ frames · [\d.]+ s · \d+ clips? of \d+ @ [\d.]+ fps$/.test(out.encode_audio.text ?? ""), out.encode_audio);
  const after = await page.evaluate(async () => (await app.graphToPrompt()).output);
  out.prompt_audio_inputs = after[audioNode]?.inputs;
  check("run: the length line stays out of the saved workflow and the prompt",
        JSON.stringify(out.encode_audio.widgets_values) === JSON.stringify([TINY.frames_per_clip]) &&
        !("emocast_length" in (after[audioNode]?.inputs ?? {})), out);
  const events = await page.evaluate(() => window.__emocastEvents.map((e) => e.kind));
  out.events = events;
  // live previews of EmoCAST Sample: one a clip (its last frame) and, when the server runs with a --preview-method,
  // one a step (ComfyUI's latent previewer). The server scales each to --preview-size (ImageOps.contain, 512 px by
  // default), so only their number tells them apart: clips x (steps + 1), or clips without a preview method.
  const previews = await page.evaluate(() => window.__emocastPreviews);
  const method = (report.server_argv ?? []).join(" ").match(/--preview-method[ =](\S+)/)?.[1] ?? "none";
  const clips = Number(/(\d+) clips? of/.exec(out.encode_audio.text ?? "")?.[1] ?? NaN);
  const mine = previews.filter((p) => p.node === sampler);
  const expected = method === "none" ? clips : clips * (TINY.steps + 1);
  out.previews = { sampler, server_preview_method: method, received: previews.length,
                   plain_b_preview_events: await page.evaluate(() => window.__emocastPlainPreviews),
                   sampler_previews: mine.length, clips, steps: TINY.steps, expected_sampler_previews: expected,
                   shown_on_node: mine.filter((p) => p.on_node).length,
                   node_imgs_after: mine.filter((p) => p.node_imgs > 0).length,
                   sizes: [...new Set(mine.map((p) => JSON.stringify(p.size)))],
                   other_nodes: [...new Set(previews.filter((p) => p.node !== sampler).map((p) => p.node))] };
  check("run: live previews reach EmoCAST Sample while it samples, and the frontend shows them on the node",
        mine.length > 0 && mine.some((p) => p.on_node), out.previews);
  check(`run: EmoCAST Sample sent one preview a clip${method === "none" ? "" : ` and one a step (--preview-method ${
    method})`}`, mine.length === expected, out.previews);
  await frame({ top: true });
  await screenshot("basic_result.png");
  await layoutCheck("emocast_basic.json after the run");
  return out;
}

try {
  await page.goto(opt.url, { waitUntil: "load" });
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph && app.extensions?.length > 0 &&
                             app.extensionManager?.command, null, { timeout: 90000 });
  await page.waitForTimeout(2000);
  await closeDialogs();
  const ext = await page.evaluate(() => {
    app.registerExtension({ name: "EmoCAST.frontendCheck", beforeConfigureGraph(_graph, missing) {
      window.__emocastMissing = missing; // filled by loadGraphData after this hook
    } });
    if (app.canvas) app.canvas.show_info = false; // no stats in the corner of the screenshots
    return { version: window.__COMFYUI_FRONTEND_VERSION__, extensions: app.extensions.map((e) => e.name) };
  });
  report.frontend = ext.version;
  const stats = await (await fetch(`${opt.url}/api/system_stats`)).json();
  report.comfyui = stats.system?.comfyui_version;
  report.server_argv = stats.system?.argv;
  const warn = await page.evaluate(() => app.extensionManager.setting.get("Comfy.Workflow.ShowMissingModelsWarning"));
  check("the frontend's Missing Models warning is on (Comfy.Workflow.ShowMissingModelsWarning)", warn === true,
        "off in this ComfyUI's user settings (Settings > Workflow, or comfy.settings.json): the dialog is not shown");
  check("web extension EmoCAST.nodes registered", ext.extensions.includes("EmoCAST.nodes"), ext.extensions);
  // screenshots: no minimap, and of the workflow tabs only the open one
  await page.addStyleTag({ content: ".minimap-main-container{display:none!important}" +
    ".p-togglebutton:has(.workflow-tab):not(.p-togglebutton-checked){display:none!important}" });
  const presets = (await (await fetch(`${opt.url}/extensions/${PACK}/emocast_presets.json`)).json()).presets;

  const files = fs.readdirSync(opt.workflows).filter((f) => f.endsWith(".json")).sort();
  for (const f of files) {
    const r = await loadWorkflow(path.join(opt.workflows, f));
    await closeDialogs();
    const bad = r.nodes.filter((n) => !n.registered || n.has_errors);
    const mismatched = r.nodes.filter((n) => !n.widgets_match);
    report.workflows[f] = { nodes: r.nodes.length, links: r.links, missing: r.missing, dialogs: r.dialogs,
                            broken: bad.map((n) => `${n.id} ${n.type}`),
                            widget_mismatch: mismatched.map((n) => ({ id: n.id, type: n.type, now: n.widgets_values,
                                                                      saved: n.saved_widgets_values })) };
    check(`${f}: no missing node type`, r.missing.length === 0 && bad.length === 0, { missing: r.missing, bad });
    check(`${f}: every node and link loaded`, r.nodes.length === r.saved_nodes && r.links === r.saved_links,
          { nodes: [r.nodes.length, r.saved_nodes], links: [r.links, r.saved_links] });
    check(`${f}: widget values survive load + serialize`, mismatched.length === 0, report.workflows[f].widget_mismatch);
    // the shipped workflows name the real models with their download links: with the tiny models in place the
    // frontend offers them in its Missing Models dialog (by design); any other dialog is a failure
    const other = r.dialogs.filter((d) => !d.startsWith("Missing Models"));
    check(`${f}: no dialog but Missing Models after loading`, other.length === 0, other);
    const graph = JSON.parse(fs.readFileSync(path.join(opt.workflows, f), "utf8"));
    (report.missing_models ??= {})[f] = checkMissingModels(f, r.missing_models, await expectedMissingModels(graph));
    const shot = { "emocast_basic.json": "basic.png", "emocast_emotion_schedule.json": "emotion_schedule.png" }[f];
    if (shot) {
      await frame({ top: true });
      await screenshot(shot);
    }
    await layoutCheck(f);
    if (f === "emocast_basic.json") report.encode_emotion = await exerciseEncodeEmotion(presets);
  }
  if (opt.run) report.run = await runBasic(path.join(opt.workflows, "emocast_basic.json"));
} catch (e) {
  check("script ran to the end", false, String(e?.stack ?? e));
} finally {
  await context.close();
  fs.rmSync(userDir, { recursive: true, force: true });
}
const oursBad = report.console.ours.filter((m) => m.type === "error" || m.type === "warning");
check("no console error or warning from EmoCAST", oursBad.length === 0, oursBad);
check("no page error from EmoCAST", !report.page_errors.some((e) => e.ours), report.page_errors.filter((e) => e.ours));
report.ok = Object.values(report.checks).every(Boolean);
console.log(JSON.stringify(report, null, 1));
process.exit(report.ok ? 0 : 1);
