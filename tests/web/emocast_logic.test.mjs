// node --test tests/web   (Node >= 18; no npm packages)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { CUSTOM, audioInfo, audioSummary, presetFor, promptState } from "../../web/js/emocast_logic.js";

const table = JSON.parse(readFileSync(new URL("../../web/js/emocast_presets.json", import.meta.url), "utf8"));
const presets = table.presets;

test("a preset fills and locks the prompt", () => {
  assert.deepEqual(promptState(presets, "sad", "anything"), { value: presets.sad, locked: true });
});

test("custom keeps the user's text and unlocks", () => {
  assert.deepEqual(promptState(presets, CUSTOM, "A person is talking, bored."),
    { value: "A person is talking, bored.", locked: false });
});

test("an unknown preset (renamed in a later version) unlocks instead of erasing the prompt", () => {
  assert.deepEqual(promptState(presets, "gleeful", "my text"), { value: "my text", locked: false });
});

test("presetFor finds the preset of a prompt text", () => {
  assert.equal(presetFor(presets, ` ${presets.angry} `), "angry");
  assert.equal(presetFor(presets, "something else"), CUSTOM);
  assert.equal(presetFor(presets, undefined), CUSTOM);
});

test("the presets table has the default and the eight emotions", () => {
  assert.ok(Object.hasOwn(presets, table.default));
  assert.equal(table.emotions.length, 8);
  for (const e of table.emotions) assert.ok(Object.hasOwn(presets, e));
});

test("audio summary", () => {
  const info = { frames: 124, seconds: 4.96, clips: 8, frames_per_clip: 16, fps: 25 };
  assert.equal(audioSummary(info), "124 frames · 4.96 s · 8 clips of 16 @ 25 fps");
  assert.equal(audioSummary({ ...info, clips: 1, frames: 13, seconds: 0.52, fps: 25.0 }),
    "13 frames · 0.52 s · 1 clip of 16 @ 25 fps");
  assert.equal(audioSummary(null), "");
  assert.equal(audioSummary({}), "");
});

test("audioInfo reads the node's ui output", () => {
  const info = { frames: 1, seconds: 0.04, clips: 1, frames_per_clip: 16, fps: 25 };
  assert.deepEqual(audioInfo({ emocast_audio: [info] }), info);
  assert.equal(audioInfo({}), null);
  assert.equal(audioInfo(undefined), null);
  assert.equal(audioInfo({ emocast_audio: [] }), null);
});
