"""A task the bundled model does not do: answer a product review with one fixed JSON object.

    {"sentiment": "positive" | "negative", "product": "<the product named in the review>"}

Reviews are built from templates, products and opinion phrases with a fixed seed; the
held-out split uses products and templates the training split never saw, so a tuned model
must learn the format and the extraction, not memorise pairs.

    python -m training.finetune.generate --out training/finetune/data
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

INSTRUCTION = "Read the review and answer with JSON only."
PRODUCTS = [
    "kettle",
    "desk lamp",
    "backpack",
    "phone case",
    "coffee grinder",
    "hiking boots",
    "blender",
    "keyboard",
    "water bottle",
    "office chair",
    "toaster",
    "rain jacket",
    "headphones",
    "yoga mat",
    "frying pan",
    "alarm clock",
    "umbrella",
    "camera bag",
    "electric toothbrush",
    "bike helmet",
    "wall clock",
    "notebook",
    "desk fan",
    "thermos",
    "sleeping bag",
    "garden hose",
    "laptop stand",
    "running shoes",
    "rice cooker",
    "mouse pad",
    "table lamp",
    "travel mug",
    "tent",
    "bread knife",
    "hair dryer",
    "smart watch",
    "air fryer",
    "pillow",
    "suitcase",
    "power bank",
]
POSITIVE = [
    "works perfectly",
    "is excellent",
    "exceeded my expectations",
    "is worth every penny",
    "is great quality",
    "is exactly what I wanted",
    "made my day",
    "is fantastic",
    "works better than I hoped",
    "is really well made",
]
NEGATIVE = [
    "broke after a week",
    "is terrible",
    "was a waste of money",
    "stopped working",
    "is poorly made",
    "arrived damaged",
    "is a disappointment",
    "does not work at all",
    "fell apart quickly",
    "is worse than the cheap one I had",
]
TEMPLATES = [
    "I bought the {p} last month and it {o}.",
    "The {p} {o}.",
    "Honestly, this {p} {o}.",
    "My new {p} {o}, I would tell my friends.",
    "Ordered a {p} for my brother; it {o}.",
    "After two weeks of use, the {p} {o}.",
    "This {p} {o}!",
    "Got the {p} on sale and it {o}.",
    "Our family {p} {o}.",
    "The {p} I received {o}.",
    "Review of the {p}: it {o}.",
    "Well, the {p} {o}. That is all.",
]


def example(rng: random.Random, products: list[str], templates: list[str]) -> dict[str, object]:
    product = rng.choice(products)
    positive = rng.random() < 0.5
    opinion = rng.choice(POSITIVE if positive else NEGATIVE)
    review = rng.choice(templates).format(p=product, o=opinion)
    answer = {"sentiment": "positive" if positive else "negative", "product": product}
    return {
        "messages": [
            {"role": "user", "content": f"{INSTRUCTION}\nReview: {review}"},
            {"role": "assistant", "content": json.dumps(answer)},
        ]
    }


def generate(
    train: int, test: int, seed: int
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    rng = random.Random(seed)
    products = list(PRODUCTS)
    rng.shuffle(products)
    held_products, train_products = products[:8], products[8:]
    templates = list(TEMPLATES)
    rng.shuffle(templates)
    held_templates, train_templates = templates[:3], templates[3:]
    train_set = [example(rng, train_products, train_templates) for _ in range(train)]
    test_set = [example(rng, held_products, held_templates) for _ in range(test)]
    return train_set, test_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("training/finetune/data"))
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    train_set, test_set = generate(args.train, args.test, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train_set), ("test.jsonl", test_set)):
        (args.out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps({"train": len(train_set), "test": len(test_set), "out": str(args.out)}))


if __name__ == "__main__":
    main()
