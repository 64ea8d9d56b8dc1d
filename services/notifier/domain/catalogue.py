"""Every text a client reads about aftercare, in English and French.

`CATALOGUE` below is the single place for them: one entry per step of SPEC section 5 and per
locale, carrying the seed's facts in our own words. Some lines only apply to some sessions (scabs
after a deep treatment, the window for a next session, the appointment's date), so they are marked
with the condition that lets them through. Texts give care instructions, never a health answer
or a diagnosis: anything unusual sends the client to the clinic. `text_for` is the whole rule:
pure, synchronous, no I/O, and no dependence on the process locale.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.vocabulary import AftercareStep, Locale


class StepText(BaseModel):
    """What the client reads for one step."""

    model_config = ConfigDict(frozen=True)

    title: str
    instructions: list[str]


class Only(StrEnum):
    """When a conditional line is shown."""

    BLEEDING = "bleeding"  # the session drew small bleeding (a deep treatment)
    NEXT_SESSION = "next_session"  # the plan has another session to come
    DATED = "dated"  # the appointment's local date and time are known
    UNDATED = "undated"  # they are not


class Line(BaseModel):
    """A line shown only when `only` holds; a DATED line may use {weekday} {day} {month} {time}."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    only: Only
    text: str = Field(min_length=1)


class Entry(BaseModel):
    """One step in one language; plain strings are always shown, in order with `Line`s."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1)
    lines: list[str | Line] = Field(min_length=1)


class CalendarWords(BaseModel):
    """Names for dates, so a reminder reads the same whatever the server's locale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weekdays: list[str] = Field(min_length=7, max_length=7, description="Monday first")
    months: list[str] = Field(min_length=12, max_length=12, description="January first")
    first_day: str = Field(description="How the 1st of a month is written")


def only(condition: Only, text: str) -> Line:
    return Line(only=condition, text=text)


CATALOGUE: dict[AftercareStep, dict[Locale, Entry]] = {
    AftercareStep.IMMEDIATE: {
        Locale.EN: Entry(
            title="Right after your session",
            lines=[
                "Apply sunscreen to the treated skin today, and every time you go outside.",
                "Apply a healing (regenerating) cream to the treated area.",
                "Put no make-up or other product on the skin, apart from sun protection and "
                "the healing care.",
                "Do not put ice on your face, and do not use arnica or bromelain.",
                "If the area feels sore, acetaminophen is fine.",
                "Take no anti-inflammatory drugs for one week.",
            ],
        ),
        Locale.FR: Entry(
            title="Juste après votre séance",
            lines=[
                "Appliquez une crème solaire sur la peau traitée aujourd'hui, et à chaque sortie.",
                "Appliquez une crème cicatrisante (régénérante) sur la zone traitée.",
                "N'appliquez ni maquillage ni autre produit sur la peau, en dehors de la "
                "protection solaire et du soin cicatrisant.",
                "Ne mettez pas de glace sur le visage, et n'utilisez ni arnica ni bromélaïne.",
                "Si la zone est sensible, vous pouvez prendre du paracétamol.",
                "Ne prenez aucun anti-inflammatoire pendant une semaine.",
            ],
        ),
    },
    AftercareStep.DAY_1: {
        Locale.EN: Entry(
            title="Day 1: gentle care",
            lines=[
                "Keep the treated area clean.",
                "Apply a moisturiser once or twice a day.",
                "For this first week, avoid smoking, heavy drinking, hard exercise and sweating, "
                "swimming, heat and sun.",
                "Redness usually fades within 24 to 48 hours.",
            ],
        ),
        Locale.FR: Entry(
            title="Jour 1 : des soins en douceur",
            lines=[
                "Gardez la zone traitée propre.",
                "Appliquez une crème hydratante une à deux fois par jour.",
                "Pendant cette première semaine, évitez le tabac, l'alcool en excès, le sport "
                "intense et la transpiration, la baignade, la chaleur et le soleil.",
                "Les rougeurs s'estompent en général en 24 à 48 heures.",
            ],
        ),
    },
    AftercareStep.DAY_3: {
        Locale.EN: Entry(
            title="Day 3: how your skin looks",
            lines=[
                "The pinkness of the first days should be gone by now.",
                only(
                    Only.BLEEDING,
                    "After a deep treatment, small scabs may appear; they fade within a few "
                    "days. Do not pick them.",
                ),
                "If the redness persists, please contact the clinic.",
            ],
        ),
        Locale.FR: Entry(
            title="Jour 3 : l'aspect de votre peau",
            lines=[
                "La teinte rosée des premiers jours devrait maintenant avoir disparu.",
                only(
                    Only.BLEEDING,
                    "Après un soin en profondeur, de petites croûtes peuvent apparaître ; elles "
                    "disparaissent en quelques jours. Ne les arrachez pas.",
                ),
                "Si les rougeurs persistent, contactez la clinique.",
            ],
        ),
    },
    AftercareStep.DAY_7: {
        Locale.EN: Entry(
            title="Day 7: one week on",
            lines=[
                "The week without anti-inflammatory drugs is over.",
                "Keep using sunscreen on the treated skin.",
            ],
        ),
        Locale.FR: Entry(
            title="Jour 7 : une semaine déjà",
            lines=[
                "La semaine sans anti-inflammatoires est terminée.",
                "Continuez à appliquer une crème solaire sur la peau traitée.",
            ],
        ),
    },
    AftercareStep.DAY_15: {
        Locale.EN: Entry(
            title="Day 15: back to your habits",
            lines=[
                "The 15 days without sun, tanning, sauna, steam room and swimming pool are over.",
                only(Only.NEXT_SESSION, "The window for your next session is now open."),
            ],
        ),
        Locale.FR: Entry(
            title="Jour 15 : retour à vos habitudes",
            lines=[
                "Les 15 jours sans soleil, bronzage, sauna, hammam ni piscine sont terminés.",
                only(Only.NEXT_SESSION, "Votre prochaine séance peut désormais avoir lieu."),
            ],
        ),
    },
    AftercareStep.NEXT_SESSION: {
        Locale.EN: Entry(
            title="Your next session is coming up",
            lines=[
                only(Only.DATED, "Your appointment is on {weekday} {day} {month} at {time}."),
                only(Only.UNDATED, "Your next appointment is in a few days."),
                "If you need to move it, please contact the clinic.",
            ],
        ),
        Locale.FR: Entry(
            title="Votre prochaine séance approche",
            lines=[
                only(Only.DATED, "Votre rendez-vous est le {weekday} {day} {month} à {time}."),
                only(Only.UNDATED, "Votre prochain rendez-vous a lieu dans quelques jours."),
                "Si vous devez le déplacer, contactez la clinique.",
            ],
        ),
    },
    AftercareStep.TOUCH_UP: {
        Locale.EN: Entry(
            title="Time for your yearly touch-up",
            lines=[
                "A year has passed since the last session of your treatment plan.",
                "A touch-up session once a year helps keep the results; contact the clinic to "
                "book yours.",
            ],
        ),
        Locale.FR: Entry(
            title="C'est le moment de votre retouche annuelle",
            lines=[
                "Un an s'est écoulé depuis la dernière séance de votre programme.",
                "Une séance de retouche par an aide à conserver les résultats ; contactez la "
                "clinique pour la réserver.",
            ],
        ),
    },
    AftercareStep.MAINTENANCE: {
        Locale.EN: Entry(
            title="Time for a maintenance session",
            lines=[
                "About three months have passed since your session.",
                "Skin in good shape keeps its benefits with a maintenance session every three "
                "to six months; contact the clinic to book yours.",
            ],
        ),
        Locale.FR: Entry(
            title="C'est le moment d'une séance d'entretien",
            lines=[
                "Environ trois mois se sont écoulés depuis votre séance.",
                "Une peau en bonne forme garde ses bénéfices avec une séance d'entretien tous "
                "les trois à six mois ; contactez la clinique pour la réserver.",
            ],
        ),
    },
}

CALENDAR: dict[Locale, CalendarWords] = {
    Locale.EN: CalendarWords(
        weekdays=["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
        months=[
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ],
        first_day="1",
    ),
    Locale.FR: CalendarWords(
        weekdays=["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
        months=[
            "janvier",
            "février",
            "mars",
            "avril",
            "mai",
            "juin",
            "juillet",
            "août",
            "septembre",
            "octobre",
            "novembre",
            "décembre",
        ],
        first_day="1er",
    ),
}


def _date_words(moment: datetime, locale: Locale) -> dict[str, str]:
    """The pieces of a DATED line, from the wall-clock time `moment` shows."""
    words = CALENDAR[locale]
    return {
        "weekday": words.weekdays[moment.weekday()],
        "day": words.first_day if moment.day == 1 else str(moment.day),
        "month": words.months[moment.month - 1],
        "time": f"{moment.hour:02d}:{moment.minute:02d}",
    }


def text_for(
    step: AftercareStep,
    locale: Locale,
    *,
    bleeding: bool = False,
    has_next_session: bool = True,
    next_session_local: datetime | None = None,
) -> StepText:
    """The title and instructions of `step` in `locale`. `next_session_local` is the appointment
    already in the site's timezone: it is written as it reads on the clinic's wall clock."""
    holds = {
        Only.BLEEDING: bleeding,
        Only.NEXT_SESSION: has_next_session,
        Only.DATED: next_session_local is not None,
        Only.UNDATED: next_session_local is None,
    }
    entry = CATALOGUE[step][locale]
    instructions: list[str] = []
    for line in entry.lines:
        if isinstance(line, str):
            instructions.append(line)
        elif holds[line.only]:
            if line.only is Only.DATED and next_session_local is not None:
                instructions.append(line.text.format(**_date_words(next_session_local, locale)))
            else:
                instructions.append(line.text)
    return StepText(title=entry.title, instructions=instructions)
