"""Request validation and image_url decoding, without a server."""

from __future__ import annotations

import pytest
from serve_helpers import data_url, user_message

from paddlemix_r1.serve.images import load_image_url
from paddlemix_r1.serve.schemas import IGNORED, SUPPORTED, UNSUPPORTED, APIError, parse_chat_request

MSG = [{"role": "user", "content": "Hi"}]


def _error(payload) -> APIError:
    with pytest.raises(APIError) as info:
        parse_chat_request(payload)
    return info.value


def test_field_sets_are_disjoint():
    assert not set(SUPPORTED) & set(IGNORED) and not set(SUPPORTED) & set(UNSUPPORTED)
    assert not set(IGNORED) & set(UNSUPPORTED)


def test_supported_fields_parse():
    req = parse_chat_request({"model": "m", "messages": [user_message("x", ["data:image/png;base64,AA=="])],
                              "temperature": 0, "top_p": 0.5, "top_k": 3, "max_completion_tokens": 7, "n": 2,
                              "seed": 1, "stop": "END"})
    assert req.requested_max_tokens == 7 and req.stop_list == ["END"] and req.n == 2
    assert parse_chat_request({"messages": MSG, "max_tokens": 5}).requested_max_tokens == 5


def test_unknown_fields_are_named():
    e = _error({"messages": MSG, "zeta": 1, "alpha": 2})
    assert e.status == 400 and e.code == "unknown_field" and "alpha, zeta" in e.message


@pytest.mark.parametrize("key,neutral,other", [
    ("stream", False, True), ("logprobs", False, True), ("presence_penalty", 0, 0.5), ("frequency_penalty", 0.0, 1),
    ("response_format", {"type": "text"}, {"type": "json_object"}), ("tools", [], [{"type": "function"}]),
    ("tool_choice", "none", "auto"), ("logit_bias", {}, {"1": 5}),
])
def test_unsupported_parameters_only_at_their_neutral_value(key, neutral, other):
    assert parse_chat_request({"messages": MSG, key: neutral})
    assert parse_chat_request({"messages": MSG, key: None})
    e = _error({"messages": MSG, key: other})
    assert e.code == "unsupported_parameter" and e.param == key


def test_ignored_fields_are_accepted():
    assert parse_chat_request({"messages": MSG, "user": "u", "metadata": {"a": "b"}, "store": True})


@pytest.mark.parametrize("payload,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x", "zoom": 2}}]}]},
     "messages.0.content.0.image_url.zoom"),
    ({"messages": MSG, "n": 0}, "n"),
    ({"messages": MSG, "top_p": 0}, "top_p"),
    ({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages.0"),
])
def test_invalid_values_name_their_path(payload, param):
    e = _error(payload)
    assert e.status == 400 and e.param is not None and e.param.startswith(param), (e.param, e.message)


def test_not_an_object():
    assert _error(["messages"]).status == 400


def test_image_urls(image_root):
    assert load_image_url(data_url(image_root / "red.png"), None, "p").size == (64, 48)
    assert load_image_url("red.png", str(image_root), "p").size == (64, 48)
    assert load_image_url(f"file://{image_root / 'red.png'}", str(image_root), "p").size == (64, 48)
    for url, root, status in [("red.png", None, 403), ("../outside.png", str(image_root), 403),
                              (str(image_root.parent / "outside.png"), str(image_root), 403),
                              ("http://example.com/a.png", str(image_root), 400),
                              ("ftp://example.com/a.png", str(image_root), 400),
                              ("data:text/plain;base64,aGk=", None, 400), ("data:image/png,raw", None, 400),
                              ("broken.png", str(image_root), 400)]:
        with pytest.raises(APIError) as info:
            load_image_url(url, root, "p")
        assert info.value.status == status, url


def test_symlink_out_of_the_root_is_refused(image_root, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.png").symlink_to(image_root / "red.png")
    with pytest.raises(APIError) as info:
        load_image_url("link.png", str(root), "p")
    assert info.value.status == 403
