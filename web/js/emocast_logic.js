// Pure helpers of the EmoCAST web extension (no DOM, no ComfyUI): unit-tested with `node --test tests/web`.

/** The preset combo entry that leaves the prompt to the user. */
export const CUSTOM = "custom";

/**
 * What the prompt widget shows for a preset choice.
 * @param {Record<string, string>} presets preset name -> prompt (web/js/emocast_presets.json "presets")
 * @param {string} preset the combo's value
 * @param {string} current the prompt widget's current text
 * @returns {{value: string, locked: boolean}} the text to show and whether editing is locked
 */
export function promptState(presets, preset, current) {
  if (preset !== CUSTOM && Object.prototype.hasOwnProperty.call(presets, preset)) {
    return { value: presets[preset], locked: true };
  }
  return { value: current, locked: false };
}

/**
 * The preset a prompt text corresponds to (for switching back from "custom"), or CUSTOM.
 * @param {Record<string, string>} presets
 * @param {string} text
 */
export function presetFor(presets, text) {
  const t = (text ?? "").trim();
  for (const [name, prompt] of Object.entries(presets)) {
    if (prompt === t) return name;
  }
  return CUSTOM;
}

/**
 * One line describing EmoCAST Encode Audio's result, e.g. "124 frames · 4.96 s · 8 clips of 16 @ 25 fps".
 * @param {{frames: number, seconds: number, clips: number, frames_per_clip: number, fps: number}} info
 */
export function audioSummary(info) {
  if (!info || !Number.isFinite(info.frames)) return "";
  const seconds = Number(info.seconds).toFixed(2);
  const clips = info.clips === 1 ? "1 clip" : `${info.clips} clips`;
  const fps = Number.isInteger(info.fps) ? info.fps : Number(info.fps).toFixed(2);
  return `${info.frames} frames · ${seconds} s · ${clips} of ${info.frames_per_clip} @ ${fps} fps`;
}

/**
 * The info record of an "executed" message of EmoCAST Encode Audio (its ui key), or null.
 * @param {object} output the node's ui output, e.g. {emocast_audio: [{...}]}
 */
export function audioInfo(output) {
  const list = output?.emocast_audio;
  return Array.isArray(list) && list.length ? list[list.length - 1] : null;
}
