"""The demo's tiny models follow the published weight rule bit for bit (self-test hashes)."""
import hashlib
import json

import pytest

from emocast.demo.tiny import rule_value, tiny_state_dict


@pytest.mark.parametrize("component", ["net", "vae", "text_encoder", "wav2vec2"])
def test_rule_weights_match_selftest(fixtures, component):
    expected = json.loads((fixtures / "weights" / "tiny_weights_selftest.json").read_text())[component]
    sd = tiny_state_dict(component)
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode("utf-8"))
        h.update(sd[k].contiguous().numpy().tobytes())
    assert len(sd) == expected["num_entries"]
    assert h.hexdigest() == expected["sha256"]


def test_rule_factors():
    assert rule_value("a.token_embedding.weight", (4, 3)).abs().max() < 0.2
    norm = rule_value("x.norm1.weight", (64,))
    assert abs(float(norm.mean()) - 1.0) < 0.05
    assert rule_value("x.bias", (64,)).abs().max() < 0.1
