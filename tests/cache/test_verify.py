from __future__ import annotations

import pytest

from keel.cache.verify import consistent


@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("What is the capital of France?", "Which city is France's capital?"),
        ("How do I undo my last commit in Git?", "In Git, how can I undo my last commit?"),
        ("How many ounces are in 2 pounds?", "Convert two pounds to ounces."),
        ("Who wrote War and Peace?", "Which writer wrote War and Peace?"),
        ("Explain recursion in simple terms.", "What is recursion? Explain it like I'm new."),
    ],
)
def test_paraphrases_pass(cached: str, query: str) -> None:
    assert consistent(query, cached)


@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("What is 15% of 200?", "What is 15% of 300?"),  # numbers
        ("Which foods should I eat with gout?", "Which foods should I not eat with gout?"),
        ("Why does my TV turn on?", "Why won't my TV turn on?"),
        ("What is the capital of Austria?", "What is the capital of Australia?"),  # entity
        ("Is Canada bigger than Brazil?", "Is Brazil bigger than Canada?"),  # swapped
        ("Why did Spain declare war on England?", "Why did England declare war on Spain?"),
        ("How do I convert a string to an integer?", "How do I convert an integer to a string?"),
        ("How do I enable dark mode?", "How do I disable dark mode?"),  # opposites
        ("How do I mute a channel?", "How do I unmute a channel?"),  # negating prefix
        ("Give me a recipe for hummus.", "Give me a recipe for lasagna."),  # one word swapped
    ],
)
def test_near_misses_are_rejected(cached: str, query: str) -> None:
    assert not consistent(query, cached)
    assert not consistent(cached, query)


# Real chat text: all lower-case, request frames, who / what / which. Each pair below is
# two different questions; serving one's answer to the other would be a wrong answer.
@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("what's my name", "what's your name"),  # person swap
        ("what do you call me", "what do i call you"),  # roles swapped
        ("turn the volume up", "turn your volume up"),  # the assistant's, not the user's
        ("add milk to my shopping list", "is milk on my shopping list"),  # request / question
        ("you can take laundry off my todo list", "is laundry on my todo list"),
        ("remove eggs from my shopping list", "add eggs to my shopping list"),  # the action
        ("how many vacation days i have used", "what amount of vacation days do i have"),
        ("i need my bank account frozen", "ask them why my account is frozen"),
        ("how do i change my oil", "i need to get my oil changed"),  # how-to / do it
        ("when did i last change my oil", "when should i change my oil"),  # past / future
        ("what time is it in paris", "what time is it in london"),  # lower-case names
        ("what is the current time in new york", "what timezone is new york in"),
        ("get everything on my shopping list", "list everything on my shopping list"),
        ("should i refrigerate tomatoes", "should i avoid refrigerating tomatoes"),
    ],
)
def test_real_near_misses_are_not_served(cached: str, query: str) -> None:
    assert not consistent(query, cached)
    assert not consistent(cached, query)


@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("i'm not sure how to reset my password", "how do i reset my password"),  # no negation
        ("i don't know how to set up direct deposit", "how do i set up direct deposit"),
        ("i need a new credit card", "i want a new credit card"),  # synonyms
        ("can you read me the whole list", "read me the entire list"),
        ("how many vacation days do i have", "can you tell me how many vacation days i have"),
        ("what kind of plug does the country use", "what type of plug does the country use"),
        ("What is the capital of France?", "what is the capital of france"),  # case
    ],
)
def test_real_paraphrases_are_served(cached: str, query: str) -> None:
    assert consistent(query, cached)
    assert consistent(cached, query)


def test_a_long_question_gets_no_semantic_hit() -> None:
    # The embedder reads about the first 200 words; past that, similarity says nothing
    # (and comparing such texts word by word took seconds on the event loop).
    text = "Please summarise the following report. " + "The figures rose again. " * 300
    assert not consistent(text, text + " Thanks.")
    assert not consistent(text + " Thanks.", text)


# One row per kind of change that alters a request, each with a real near-miss it must
# refuse (CLINC150 queries of two intents) and a real paraphrase it must still serve.
@pytest.mark.parametrize(
    ("near_miss", "paraphrase"),
    [
        # who is named: "call me X" renames the user, "call X" phones X; "set me an
        # alarm" is "set an alarm for me"
        (("call me mary", "can you call mary"),
         ("please set an alarm for me", "please set me an alarm")),
        (("please call me bob", "remind me to call bob"), ("flip me a coin", "flip a coin")),
        # the particle after the same verb: "put … on" plays, "put … in" adds
        (("put my workout playlist on", "put this in my workout playlist"),
         ("turn the volume up", "turn up the volume")),
        # one more object listed
        (("how much is my water bill", "how much is the bill for my water and electricity"),
         ("do you like cats or dogs", "do you like cat or dogs")),
        (("how much are my cable and water bills",
          "what is the minimum amount due on my cable bill"),
         ("are you a real person or an ai", "are you a real person or an ai please")),
        # done against to be done: "have my oil changed" is no perfect
        (("when did i change my oil", "how soon should i have my oil changed"),
         ("how many vacation days do i have saved up",
          "how many vacation days have i saved up")),
        # the question word, wherever it stands
        (("how much is my water bill", "when is my water bill due"),
         ("in tokyo, what time is it", "what time is it in tokyo")),
        (("what is my credit score", "how do i improve my credit score"),
         ("where can i find my w-2 form", "how do i find my w-2 form")),
        (("i want my bank account frozen", "need help with frozen bank account"),
         ("help me change my pin number", "how do i change my pin number")),
        # numbers, but "one" as a pronoun counts nothing
        (("i need a table for 2", "i need a table for 4"),
         ("how do i go about setting up direct deposit",
          "how does one go about setting up direct deposit")),
    ],
)  # fmt: skip
def test_each_kind_of_change_is_refused_and_its_paraphrase_served(
    near_miss: tuple[str, str], paraphrase: tuple[str, str]
) -> None:
    assert not consistent(*near_miss)
    assert not consistent(*reversed(near_miss))
    assert consistent(*paraphrase)
    assert consistent(*reversed(paraphrase))


@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("i really wanna know my credit score", "i wanna know my credit score"),  # fillers
        ("detroit is in what timezone", "what timezone is detroit in"),  # late question word
        ("how is my tire pressure", "how's my tire pressure"),  # "'s" is "is"
        ("when is my next paycheck", "when will my next paycheck be"),  # "next": future
        ("my card is lost what do i do", "i lost my card, what do i do"),
        ("i need to know what the traffic is like on the way to phoenix",
         "i wanna know what the traffic is like on the way to phoenix"),  # "to know": no role
    ],
)  # fmt: skip
def test_real_paraphrases_worded_apart_are_served(cached: str, query: str) -> None:
    assert consistent(query, cached)
    assert consistent(cached, query)
