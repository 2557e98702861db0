"""Text cleaning (predictor.yaml `preprocess:`): each step, their order, and the settings' checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from predictors.model import ModelSettingsError, PreprocessSection, TextCleaner, read_settings

EVERYTHING = PreprocessSection(
    unicode_normalization="NFKC", replace_urls="_url_", replace_emails="_email_", replace_numbers="_number_",
    lowercase=True, remove_punctuation=True, collapse_whitespace=True,
)


def test_off_by_default_and_then_the_identity():
    cleaner = TextCleaner()
    assert not cleaner.active and cleaner.steps() == []
    text = "  Mixed CASE, punctuation!  https://x.io 42 "
    assert cleaner(text) == text
    assert cleaner.clean([text]) == [text]


def test_every_step_in_order():
    cleaner = TextCleaner(EVERYTHING)
    text = "Visit WWW.Example.com/x or https://a.b/c?d=1, mail Bob.S@ex-ample.co.uk, pay $1,299.99 NOW!!\u00a0ＦＵＬＬ\twidth"
    assert cleaner(text) == "visit _url_ or _url_ mail _email_ pay _number_ now full width"
    assert cleaner.steps() == [
        "unicode_normalization=NFKC", "replace_urls=_url_", "replace_emails=_email_", "replace_numbers=_number_",
        "lowercase", "remove_punctuation", "collapse_whitespace",
    ]


def test_an_address_inside_a_url_is_part_of_the_url():
    cleaner = TextCleaner(PreprocessSection(replace_urls="URL", replace_emails="EMAIL"))
    assert cleaner("see https://host/user@example.com today").split() == ["see", "URL", "today"]


def test_numbers_inside_urls_go_with_the_url():
    cleaner = TextCleaner(PreprocessSection(replace_urls="U", replace_numbers="N", collapse_whitespace=True))
    assert cleaner("call 555 or www.a1.com/42") == "call N or U"


def test_steps_that_are_off_leave_their_part_alone():
    cleaner = TextCleaner(PreprocessSection(lowercase=True))
    assert cleaner("Hello, World 42!") == "hello, world 42!"
    cleaner = TextCleaner(PreprocessSection(remove_punctuation=True))
    assert cleaner("Hello, World!") == "Hello  World "


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_whitespace_collapse_is_the_regex_definition_of_whitespace(text):
    collapsed = TextCleaner(PreprocessSection(collapse_whitespace=True))(text)
    assert collapsed == re.sub(r"\s+", " ", text).strip()


@given(st.text(max_size=80))
def test_cleaned_text_has_only_word_characters_and_single_spaces(text):
    cleaned = TextCleaner(EVERYTHING)(text)
    assert cleaned == cleaned.strip() and "  " not in cleaned
    assert re.fullmatch(r"[\w ]*", cleaned)


def _settings(tmp_path: Path, yaml_text: str):
    (tmp_path / "predictor.yaml").write_text(yaml_text)
    return read_settings(tmp_path / "predictor.yaml", "m")


def test_a_replacement_punctuation_removal_would_cut_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ModelSettingsError, match=r"preprocess: replace_urls '<url>' would lose its punctuation.*_url_"):
        _settings(tmp_path, "preprocess: {replace_urls: '<url>', remove_punctuation: true}\n")
    assert _settings(tmp_path, "preprocess: {replace_urls: '<url>'}\n").preprocess.replace_urls == "<url>"


@pytest.mark.parametrize("yaml_text, message", [
    ("preprocess: {lowercse: true}\n", "unknown key(s) ['lowercse'] in the preprocess section"),
    ("preprocess: {unicode_normalization: NFX}\n", "preprocess.unicode_normalization must be NFC, NFKC, NFD or NFKD"),
    ("preprocess: {replace_numbers: 'two words'}\n", "preprocess.replace_numbers must be a token without spaces"),
    ("preprocess: {lowercase: yes please}\n", "preprocess.lowercase must be true or false"),
])
def test_bad_preprocess_settings_name_the_key(tmp_path, yaml_text, message):
    with pytest.raises(ModelSettingsError) as error:
        _settings(tmp_path, yaml_text)
    assert message in str(error.value) and "model 'm'" in str(error.value)
