"""Aftercare texts: every step in both languages, the seed's facts, and the conditional lines."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.notifier.domain.catalogue import CATALOGUE, text_for
from shared.vocabulary import AftercareStep, Locale

EVERY = [(step, locale) for step in AftercareStep for locale in Locale]
FLAGS = [
    {"bleeding": b, "has_next_session": n, "next_session_local": d}
    for b in (False, True)
    for n in (False, True)
    for d in (None, datetime(2026, 12, 8, 14, 0, tzinfo=ZoneInfo("Europe/Paris")))
]


def read(step: AftercareStep, locale: Locale, **flags: object) -> str:
    """Title and instructions as one lower-case text, to look facts up in."""
    text = text_for(step, locale, **flags)  # type: ignore[arg-type]
    return " ".join([text.title, *text.instructions]).lower()


def test_the_catalogue_covers_every_step_in_every_locale() -> None:
    assert set(CATALOGUE) == set(AftercareStep)
    for step, locales in CATALOGUE.items():
        assert set(locales) == set(Locale), step


@pytest.mark.parametrize(("step", "locale"), EVERY)
def test_every_step_has_a_title_and_instructions_whatever_the_session(
    step: AftercareStep, locale: Locale
) -> None:
    for flags in FLAGS:
        text = text_for(step, locale, **flags)  # type: ignore[arg-type]
        assert text.title.strip()
        assert text.instructions
        for line in text.instructions:
            assert line.strip()
            assert "{" not in line, line
            assert "}" not in line, line


FACTS: dict[tuple[AftercareStep, Locale], list[str]] = {
    (AftercareStep.IMMEDIATE, Locale.EN): [
        "sunscreen", "healing", "regenerating", "make-up", "sun protection", "ice", "face",
        "arnica", "bromelain", "acetaminophen", "sore", "anti-inflammatory", "one week",
    ],
    (AftercareStep.IMMEDIATE, Locale.FR): [
        "crème solaire", "cicatrisant", "régénérante", "maquillage", "protection solaire",
        "glace", "visage", "arnica", "bromélaïne", "paracétamol", "anti-inflammatoire",
        "une semaine",
    ],
    (AftercareStep.DAY_1, Locale.EN): [
        "clean", "moisturiser", "once or twice a day", "smoking", "drinking", "exercise",
        "sweating", "swimming", "heat", "sun", "redness", "24", "48",
    ],
    (AftercareStep.DAY_1, Locale.FR): [
        "propre", "hydratante", "une à deux fois par jour", "tabac", "alcool", "sport",
        "transpiration", "baignade", "chaleur", "soleil", "rougeurs", "24", "48",
    ],
    (AftercareStep.DAY_3, Locale.EN): ["pinkness", "gone", "redness", "persists", "clinic"],
    (AftercareStep.DAY_3, Locale.FR): ["rosée", "disparu", "rougeurs", "persistent", "clinique"],
    (AftercareStep.DAY_7, Locale.EN): ["week", "anti-inflammatory", "over", "sunscreen"],
    (AftercareStep.DAY_7, Locale.FR): ["semaine", "anti-inflammatoires", "terminée", "solaire"],
    (AftercareStep.DAY_15, Locale.EN): [
        "15 days", "sun", "tanning", "sauna", "steam room", "swimming pool", "over",
    ],
    (AftercareStep.DAY_15, Locale.FR): [
        "15 jours", "soleil", "bronzage", "sauna", "hammam", "piscine", "terminés",
    ],
    (AftercareStep.NEXT_SESSION, Locale.EN): ["appointment", "session"],
    (AftercareStep.NEXT_SESSION, Locale.FR): ["rendez-vous", "séance"],
    (AftercareStep.TOUCH_UP, Locale.EN): ["touch-up", "year", "clinic"],
    (AftercareStep.TOUCH_UP, Locale.FR): ["retouche", "un an", "clinique"],
    (AftercareStep.MAINTENANCE, Locale.EN): ["maintenance", "three months", "clinic"],
    (AftercareStep.MAINTENANCE, Locale.FR): ["entretien", "trois mois", "clinique"],
}  # fmt: skip


def test_every_step_and_locale_has_its_facts_listed() -> None:
    assert set(FACTS) == set(EVERY)


@pytest.mark.parametrize(("step", "locale"), EVERY)
def test_each_step_carries_the_facts_of_the_spec_table(step: AftercareStep, locale: Locale) -> None:
    text = read(step, locale)
    missing = [fact for fact in FACTS[step, locale] if fact not in text]
    assert not missing, f"{step}/{locale} lacks {missing}: {text}"


ENGLISH = re.compile(r"\b(the|and|your|you|is|are|of|to|with|after|please)\b")
FRENCH = re.compile(r"\b(le|la|les|des|du|votre|vos|est|sont|et|une|pour|avec)\b")


@pytest.mark.parametrize("step", list(AftercareStep))
def test_french_texts_are_french_and_english_texts_english(step: AftercareStep) -> None:
    flags = {"bleeding": True, "next_session_local": datetime(2026, 12, 8, 14, 0)}
    fr, en = read(step, Locale.FR, **flags), read(step, Locale.EN, **flags)
    assert FRENCH.search(fr), fr
    assert not ENGLISH.findall(fr), fr
    assert ENGLISH.search(en), en
    assert not FRENCH.findall(en), en


@pytest.mark.parametrize(("locale", "scabs"), [(Locale.EN, "scabs"), (Locale.FR, "croûtes")])
def test_day_3_mentions_scabs_only_after_bleeding(locale: Locale, scabs: str) -> None:
    assert scabs not in read(AftercareStep.DAY_3, locale, bleeding=False)
    with_scabs = read(AftercareStep.DAY_3, locale, bleeding=True)
    assert scabs in with_scabs
    assert "pick" in with_scabs or "arrachez" in with_scabs


def test_the_scab_line_sits_between_pinkness_and_the_clinic() -> None:
    lines = text_for(AftercareStep.DAY_3, Locale.EN, bleeding=True).instructions
    assert [("pinkness" in x, "scabs" in x, "clinic" in x) for x in lines] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
    ]


@pytest.mark.parametrize(
    ("locale", "window"), [(Locale.EN, "next session"), (Locale.FR, "prochaine séance")]
)
def test_day_15_opens_the_next_session_window_only_when_there_is_one(
    locale: Locale, window: str
) -> None:
    assert window in read(AftercareStep.DAY_15, locale, has_next_session=True)
    assert window not in read(AftercareStep.DAY_15, locale, has_next_session=False)


@pytest.mark.parametrize("step", [s for s in AftercareStep if s is not AftercareStep.DAY_3])
def test_bleeding_changes_only_day_3(step: AftercareStep) -> None:
    for locale in Locale:
        assert text_for(step, locale, bleeding=True) == text_for(step, locale, bleeding=False)


@pytest.mark.parametrize(
    ("moment", "locale", "expected"),
    [
        (datetime(2026, 12, 8, 14, 0), Locale.EN, "Tuesday 8 December at 14:00"),
        (datetime(2026, 12, 8, 14, 0), Locale.FR, "mardi 8 décembre à 14:00"),
        (datetime(2026, 6, 1, 9, 5), Locale.EN, "Monday 1 June at 09:05"),
        (datetime(2026, 6, 1, 9, 5), Locale.FR, "lundi 1er juin à 09:05"),
        (datetime(2026, 8, 16, 17, 30), Locale.FR, "dimanche 16 août à 17:30"),
        (datetime(2027, 2, 25, 10, 15), Locale.EN, "Thursday 25 February at 10:15"),
    ],
)
def test_the_reminder_gives_the_appointment_on_the_local_wall_clock(
    moment: datetime, locale: Locale, expected: str
) -> None:
    for tz in (None, ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")):
        text = text_for(
            AftercareStep.NEXT_SESSION, locale, next_session_local=moment.replace(tzinfo=tz)
        )
        assert any(expected in line for line in text.instructions), text.instructions


def test_a_reminder_without_a_date_still_reads_well() -> None:
    for locale in Locale:
        text = text_for(AftercareStep.NEXT_SESSION, locale)
        assert not any(re.search(r"\d", line) for line in text.instructions), text.instructions
        dated = text_for(
            AftercareStep.NEXT_SESSION, locale, next_session_local=datetime(2026, 1, 1)
        )
        assert len(dated.instructions) == len(text.instructions)
        assert dated.instructions != text.instructions


def test_step_text_is_frozen() -> None:
    text = text_for(AftercareStep.DAY_1, Locale.EN)
    with pytest.raises(ValidationError):
        text.title = "changed"  # type: ignore[misc]
