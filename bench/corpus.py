"""Deterministic chat-prompt-like texts (5-80 words) and queries for the benchmarks."""

from __future__ import annotations

import random

SUBJECTS = [
    "a Python script that parses CSV files",
    "my React component that re-renders too often",
    "a SQL query joining orders and customers",
    "the Kubernetes deployment for our API",
    "a bash loop over files with spaces in their names",
    "my sourdough starter that smells like acetone",
    "a week of vegetarian dinners for two",
    "my resume for a data engineering role",
    "a cover letter for a nursing position",
    "the difference between TCP and UDP",
    "photosynthesis for a ten year old",
    "the causes of the French Revolution",
    "a workout plan for running a first half marathon",
    "my landlord refusing to return the deposit",
    "a birthday message for my grandmother",
    "the plot of a short mystery story set in Lisbon",
    "a Rust function that fights the borrow checker",
    "compound interest on a 30 year mortgage",
    "a budget spreadsheet for a small bakery",
    "the side effects of ibuprofen with coffee",
    "a Terraform module for an S3 bucket",
    "a polite email declining a meeting",
    "the rules of chess castling",
    "a Go HTTP server with graceful shutdown",
    "a lesson plan about fractions",
    "a product description for handmade candles",
    "the best way to learn Japanese kanji",
    "a regex that matches email addresses",
    "my tomato plants with yellow leaves",
    "a Dockerfile that builds too slowly",
    "a marketing plan for a podcast launch",
    "a haiku about autumn rain",
    "the GDPR rules for storing user emails",
    "a travel itinerary for three days in Kyoto",
    "an asyncio task that never finishes",
    "a statistics homework problem about p-values",
    "the gradient descent update rule",
    "a negotiation script for a salary raise",
    "the difference between a Roth IRA and a 401k",
    "a wedding toast for my best friend",
    "a pandas groupby that runs out of memory",
    "the symptoms of burnout at work",
    "a TypeScript type for a nested config object",
    "the history of the printing press",
    "a dog that barks at every delivery driver",
    "a Git rebase that went wrong",
    "a short speech for a retirement party",
    "a unit test for a date parsing function",
    "the pros and cons of electric cars in cold climates",
    "a Linux server running out of disk space",
]
OPENINGS = [
    "Can you help me with {s}?",
    "Explain {s}.",
    "Write {s_plain} please.",
    "What is wrong with {s}?",
    "I need ideas for {s}.",
    "Give me a step by step guide to {s}.",
    "Summarize {s} in a few bullet points.",
    "How would you improve {s}?",
    "Rewrite {s} so it sounds more professional.",
    "Compare two approaches to {s}.",
    "Quick question about {s}.",
    "Review {s} and point out mistakes.",
]
DETAILS = [
    "It has to work on Windows and macOS.",
    "I already tried restarting everything and it did not help.",
    "Keep the answer short because I am reading on my phone.",
    "My manager wants this by Friday morning.",
    "The current version takes about ten minutes to run.",
    "I am a beginner so please avoid jargon.",
    "Use simple examples with real numbers.",
    "The audience is mostly retired teachers.",
    "We have a budget of roughly two thousand dollars.",
    "Last time the error said permission denied on line 42.",
    "I prefer answers with code samples and comments.",
    "This is for a school project due next week.",
    "Our team is five people working remotely across three time zones.",
    "Please include the tradeoffs and any risks I should know about.",
    "The data set has about two million rows and some missing values.",
    "I live in a small apartment without a garden.",
    "Assume I have no prior experience with the topic.",
    "Format the result as a table with three columns.",
    "Avoid anything that needs a paid subscription.",
    "It should sound friendly but not too casual.",
    "I am allergic to nuts and shellfish.",
    "The server runs Ubuntu 22.04 with 4 GB of memory.",
    "Mention any common mistakes people make.",
    "Please explain why, not just what to do.",
    "I have tried the official documentation but it is confusing.",
    "Keep it under three hundred words.",
    "The deadline moved up by two days, so speed matters.",
    "My previous attempt used recursion and hit the stack limit.",
]


def prompt_texts(count: int, seed: int = 7) -> list[str]:
    """count distinct prompts; lengths spread over 5-80 words, skewed short like real chats."""
    rng = random.Random(seed)
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < count:
        subject = rng.choice(SUBJECTS)
        opening = rng.choice(OPENINGS).format(s=subject, s_plain=subject)
        # Log-uniform-ish: many short prompts, a tail of long ones.
        target = min(80, max(5, int(5 * (16 ** rng.random()))))
        words = opening.split()
        details = rng.sample(DETAILS, k=len(DETAILS))
        for sentence in details:
            if len(words) >= target:
                break
            words += sentence.split()
        words = words[:target]
        # A number or name keeps repeated templates distinct, as real prompts are.
        tag = rng.choice(["v", "ticket #", "project ", "case ", "draft "]) + str(
            rng.randint(2, 9999)
        )
        if len(words) < 80:
            words.append(f"({tag})")
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def query_texts(count: int, seed: int = 11) -> list[str]:
    """Short search queries in the vocabulary of the prompts, as the extension sends them."""
    rng = random.Random(seed)
    queries = []
    for _ in range(count):
        subject = rng.choice(SUBJECTS)
        words = subject.split()
        start = rng.randrange(0, max(1, len(words) - 3))
        piece = " ".join(words[start : start + rng.randint(3, 6)])
        queries.append(rng.choice(["", "how to ", "help with ", "what about "]) + piece)
    return queries
