from __future__ import annotations

import pytest

from asterisk_agent.ari import requests as ari


def test_several_media_become_one_playback_request() -> None:
    request = ari.play_on_channel("c1", ["sound:hello-world", "digits:100", "digits:0042"], playback_id="aa-pb-1")
    assert request.query_strings()["media"] == "sound:hello-world,digits:100,digits:0042"
    assert ari.play_on_bridge("b1", "tone:ring", playback_id="p").query_strings()["media"] == "tone:ring"


@pytest.mark.parametrize("media", [[], [""], ["sound:a,b"], ""])
def test_bad_media_lists_are_refused(media: list[str] | str) -> None:
    with pytest.raises(ValueError, match="media must be"):
        ari.play_on_channel("c1", media, playback_id="p")
