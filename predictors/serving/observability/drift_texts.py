"""Built-in reference texts for drift, for models whose build records no held-out texts (embedding,
token classification): everyday sentences across topics, a third of them carrying contact details.
Deterministic, so a rebuilt reference is the same reference."""

from __future__ import annotations

import itertools

TOPICS = {
    "food": [
        "The soup was warm and the bread came fresh from the oven",
        "This coffee tastes bitter unless you add a little milk",
        "We ordered the pasta special and shared a lemon tart",
        "The snacks arrived stale and the bag was half empty",
    ],
    "sports": [
        "The home team scored twice in the final ten minutes",
        "She won the marathon after leading from the first mile",
        "The coach rested three players before the cup final",
        "Rain delayed the match until late in the evening",
    ],
    "business": [
        "Shares fell after the company reported weaker profits",
        "The bank raised interest rates for the second time this year",
        "Retail sales grew faster than analysts expected",
        "The startup closed a funding round led by two investors",
    ],
    "technology": [
        "The new phone chip doubles battery life",
        "A software update fixed the login problem on older laptops",
        "The team moved its servers to a cheaper cloud region",
        "Researchers released a faster open source compiler",
    ],
    "travel": [
        "Our train to the coast left forty minutes late",
        "The hotel room faced the harbour and was very quiet",
        "Flights were cancelled because of the storm",
        "We rented bikes and rode along the river all afternoon",
    ],
    "health": [
        "Regular walks lowered his blood pressure within months",
        "The clinic now offers appointments on Saturday mornings",
        "Drinking enough water helps on long summer hikes",
        "The new vaccine schedule starts next month",
    ],
}
ENDINGS = [".", ", as expected.", ", according to the report.", ", which surprised everyone."]
CONTACTS = [
    "Call Maria Lopez on 415-555-0132 for details.",
    "Send questions to john.smith@example.com before Friday.",
    "Ask for Priya Natarajan at the front desk.",
    "Reach the office at +44 20 7946 0958.",
    "Write to support@example.org with your order number 88213.",
    "Ben Carter can be reached at ben.carter@example.net.",
]


def builtin_texts() -> list[str]:
    """6 topics x 4 sentences x 4 endings = 96 plain texts, plus the first 48 again with a contact line."""
    plain = [
        sentence + ending
        for ending, (_, sentences) in itertools.product(ENDINGS, TOPICS.items())
        for sentence in sentences
    ]
    with_contacts = [f"{text} {CONTACTS[i % len(CONTACTS)]}" for i, text in enumerate(plain[::2])]
    return plain + with_contacts
