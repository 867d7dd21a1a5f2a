"""Sentences the distilled Whisper student is trained on, and the check that none of them is scored later.

The student learns from the teacher's transcriptions of this speech (pseudo-labels), and the export gate
scores it on the bench speech set (edgeomni/datasets/speechset.py), so the two must not share any text: an
overlap would let the student memorise what it is graded on. `check_disjoint` compares normalised
sentences and every run of 5 consecutive words against the bench set's references.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgeomni.errors import ExportError
from edgeomni.wer import words

# Everyday and meeting speech, written for this purpose (none of it copied from the bench set).
MEETING_SENTENCES = (
    "The parking lot behind the station is full on weekdays.",
    "Could we move the review to Wednesday afternoon?",
    "The heating in the conference room does not work.",
    "Our new colleague starts on the first of March.",
    "Please print two copies of the contract for the client.",
    "The bus stop was moved to the other side of the road.",
    "I left my umbrella in the taxi this morning.",
    "The server logs show a spike in traffic around noon.",
    "We ordered pizza for everyone who stayed late.",
    "The garden needs water at least twice a week in summer.",
    "Can somebody take notes during the workshop?",
    "The hotel offers breakfast from seven until ten.",
    "My sister is studying chemistry at the university.",
    "The shop on the corner sells the best sandwiches in town.",
    "We lost the connection twice during the video call.",
    "Please check the spelling before you send the email.",
    "The lift is out of order, so please use the stairs.",
    "Our team won the regional competition last spring.",
    "The new policy applies to all staff from next month.",
    "I need a receipt for the taxi to claim the expenses.",
    "The bakery closes early on Sundays.",
    "He walks his dog along the beach every morning.",
    "The survey had more than two thousand answers.",
    "Let me know if the link does not open on your phone.",
    "The firmware update fixed the battery problem.",
    "There is a fire drill at three o'clock today.",
    "The rent will go up by five percent in January.",
    "We planted apple trees along the northern fence.",
    "The meeting notes are in the shared folder.",
    "She bought a second hand car from her neighbour.",
    "The kids built a sandcastle near the pier.",
    "Please mute your microphone when you are not speaking.",
    "The factory produces three hundred chairs a day.",
    "Our internet provider promised a faster line next week.",
    "The play at the theatre was sold out for weeks.",
    "I prefer green tea to coffee in the afternoon.",
    "The storm knocked down several trees on our street.",
    "The dentist can see you on Tuesday at half past four.",
    "We should compare the two offers before we decide.",
    "The cat sleeps on the sofa all afternoon.",
    "Every visitor must sign in at the front desk.",
    "The prices of vegetables went up this winter.",
    "He painted the kitchen a bright shade of yellow.",
    "The project manager asked for a short status update.",
    "The ferry crosses the lake every hour in summer.",
    "Our neighbours are having a party on Saturday.",
    "The software crashes when the file is too large.",
    "Please bring a warm jacket, the evenings are cold.",
    "The orchestra rehearses in the old church hall.",
    "I have not finished reading the book you lent me.",
    "The road to the village is closed because of ice.",
    "They opened a new swimming pool near the school.",
    "The first draft of the design is ready for comments.",
    "The candidate answered every question very calmly.",
    "The power went out for an hour last evening.",
    "We are looking for volunteers to help at the fair.",
    "The recipe needs two eggs and a cup of flour.",
    "The pilot announced that we would land in twenty minutes.",
    "Please return the keys to the reception when you leave.",
    "The company plans to open an office in Madrid.",
    "My grandfather grew up on a farm by the sea.",
    "Our budget for travel has been cut in half.",
    "The students presented their research to the panel.",
    "The elevator stopped between the third and fourth floor.",
    "Can you spell your last name for me, please?",
    "The football match was cancelled because of the rain.",
    "She translated the manual into three languages.",
    "We will need a bigger room for the training session.",
    "The old bridge was painted red last summer.",
    "Please wash your hands before you enter the lab.",
    "The battery of my laptop lasts about six hours.",
    "The market is busiest on Saturday mornings.",
    "I will send you the invoice before the day is over.",
    "The river is too cold for swimming in April.",
    "They celebrated their tenth anniversary in Paris.",
    "The customer asked for a refund after two weeks.",
    "Our flat is on the top floor of a quiet building.",
    "The lecture was recorded for those who could not attend.",
    "We need more chairs for the guests in the hall.",
    "The mechanic said the brakes should be replaced soon.",
    "This path leads to a small lake in the forest.",
    "He keeps his passport in the top drawer of his desk.",
    "The deadline for the application is next Friday.",
    "Please do not leave bags unattended in the station.",
    "My phone fell into the sink while I was washing up.",
    "The village holds a music festival every August.",
    "We will publish the new timetable on Monday.",
    "The nurse took his temperature and his blood pressure.",
    "The new printer is much quieter than the old one.",
    "Our cousins are visiting us for the holidays.",
    "The painting was sold for a surprising amount of money.",
    "Please keep the noise down after ten at night.",
    "The wind was so strong that the ferry stayed in port.",
    "The report shows that energy use fell by a third.",
    "Could you pass me the salt and the pepper?",
    "The library has a large collection of old maps.",
    "They replaced the windows to keep the house warm.",
    "The interview will take about forty five minutes.",
    "I forgot to charge the camera before the trip.",
    "The school choir sang at the opening ceremony.",
    "The tickets for the concert went on sale this morning.",
    "We moved the servers to a new data centre.",
    "The baby finally fell asleep after midnight.",
    "The town hall is next to the main square.",
    "Please read the safety instructions before you start.",
    "Our supplier delivered the wrong parts again.",
    "The hikers reached the summit just before sunset.",
    "The app sends a reminder one hour before each meeting.",
    "The soup tastes better with a little more salt.",
    "He gave a short speech to thank the volunteers.",
    "The exhibition will travel to three other cities.",
    "The shop assistant helped me find the right size.",
    "We need to hire two more engineers this year.",
    "The sun came out after a long grey morning.",
    "I usually cycle to work when the weather is good.",
    "The auditors will visit our office in November.",
    "The children learned how to plant tomatoes.",
    "The phone line was busy for most of the afternoon.",
    "Please fill in the form with a black pen.",
)

# 480 more, on many topics (science, history, sport, cooking, travel, law, ...), also written for training: with
# the 119 above alone the student's held-out agreement with the teacher stalled near 80%.
GENERAL_SENTENCES_FILE = Path(__file__).parents[1] / "data" / "distill_sentences.txt"
TRAIN_SENTENCES = MEETING_SENTENCES + tuple(
    line.strip() for line in GENERAL_SENTENCES_FILE.read_text(encoding="utf-8").splitlines() if line.strip())


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def check_disjoint(train: Iterable[str], held_out: Iterable[str], ngram: int = 5) -> dict[str, Any]:
    """Raise ExportError if a training sentence appears in (or shares `ngram` consecutive words with) a
    held-out reference; return what was compared, for the report."""
    held_out = [h for h in held_out if h.strip()]
    held_grams: set[tuple[str, ...]] = set()
    for reference in held_out:
        held_grams |= _ngrams(words(reference), ngram)
    train = list(train)
    clashes = [t for t in train if _ngrams(words(t), ngram) & held_grams
               or any(" ".join(words(t)) in " ".join(words(h)) for h in held_out)]
    if clashes:
        raise ExportError(f"distillation text overlaps the bench speech set it is scored on: {clashes[:3]} "
                          f"({len(clashes)} sentences share {ngram} consecutive words with a reference)")
    return {"train_sentences": len(train), "held_out_references": len(held_out), "shared_sentences": 0,
            f"shared_{ngram}_word_runs": 0, "disjoint": True}
