// EmoCAST web extension: preset picker for EmoCAST Encode Emotion, length display on EmoCAST Encode Audio.
import { app } from "../../scripts/app.js";
import { audioInfo, audioSummary, promptState } from "./emocast_logic.js";

const PRESETS_URL = new URL("./emocast_presets.json", import.meta.url);
let presetsPromise = null; // fetched once, on the first EmoCAST Encode Emotion node

function loadPresets() {
  presetsPromise ??= fetch(PRESETS_URL)
    .then((r) => (r.ok ? r.json() : { presets: {} }))
    .then((table) => table.presets ?? {})
    .catch(() => ({}));
  return presetsPromise;
}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

const LOCKED_TITLE = "Set by the preset; choose 'custom' to edit.";

function setLocked(w, locked) {
  const el = w.element ?? w.inputEl; // DOM widget (new frontend) or legacy textarea
  if (el) {
    el.readOnly = locked;
    // no dimming of our own: the frontend already fades a disabled DOM widget (opacity 0.5), a second fade on
    // top made the preset's text all but unreadable
    if (locked) el.title = LOCKED_TITLE;
    else if (el.title === LOCKED_TITLE) el.title = "";
  }
  w.disabled = locked;
}

async function applyPreset(node) {
  const preset = widget(node, "preset");
  const prompt = widget(node, "prompt");
  if (!preset || !prompt) return;
  const state = promptState(await loadPresets(), preset.value, prompt.value);
  if (state.value !== prompt.value) prompt.value = state.value;
  setLocked(prompt, state.locked);
  node.setDirtyCanvas?.(true, true);
}

function setupEncodeEmotion(nodeType) {
  const created = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const result = created?.apply(this, arguments);
    const preset = widget(this, "preset");
    if (preset) {
      const callback = preset.callback;
      preset.callback = (...args) => {
        const r = callback?.apply(preset, args);
        applyPreset(this);
        return r;
      };
    }
    applyPreset(this);
    return result;
  };
  const configure = nodeType.prototype.onConfigure;
  nodeType.prototype.onConfigure = function () {
    const result = configure?.apply(this, arguments);
    applyPreset(this); // a loaded workflow: lock or unlock for its saved preset
    return result;
  };
}

function setupEncodeAudio(nodeType) {
  const executed = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (output) {
    const result = executed?.apply(this, arguments);
    const text = audioSummary(audioInfo(output));
    if (text) {
      let info = widget(this, "emocast_length");
      if (!info) {
        info = this.addWidget("text", "emocast_length", text, () => {}, { serialize: false });
        info.serialize = false; // not an input: kept out of the saved widget values and the prompt
        info.label = "length"; // shown instead of the name, which the canvas cut to "emoc…"
      }
      info.value = text;
      this.setDirtyCanvas?.(true, true);
    }
    return result;
  };
}

app.registerExtension({
  name: "EmoCAST.nodes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === "EmoCAST_EncodeEmotion") setupEncodeEmotion(nodeType);
    if (nodeData.name === "EmoCAST_EncodeAudio") setupEncodeAudio(nodeType);
  },
});
