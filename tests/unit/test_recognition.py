"""Recognition as a call uses it: the introduction grammar and grammar descriptions, and the pocketsphinx
process pool (calls pinned to one process, released at the end), checked by content on piper speech."""

from __future__ import annotations

import os
import pickle

import pytest

from asterisk_agent.media.codecs import ulaw_decode, ulaw_encode
from asterisk_agent.speech.recognition import GrammarProcessPool
from asterisk_agent.speech.stt.grammars import GrammarSpec, Introduction, introduction, spoken_digits
from asterisk_agent.speech.tts import PiperSynthesizer, render_phone

PEOPLE = ("Alice", "Brian", "Maria Garcia", "Maria")


def test_introduction_reads_name_and_number_in_common_phrasings() -> None:
    grammar = introduction(PEOPLE, 4)
    assert grammar.normalize("my name is alice and my number is four two seven one") == Introduction("Alice", "4271")
    assert grammar.normalize("Brian, one two three four.") == Introduction("Brian", "1234")
    # The longest listed name wins; open recognition writes numbers as numerals.
    assert grammar.normalize("This is Maria Garcia. My number is 5983.") == Introduction("Maria Garcia", "5983")
    assert grammar.normalize("I'm Maria, number 42-71") == Introduction("Maria", "4271")
    assert grammar.normalize("this is alice the number 7 9 3 8") == Introduction("Alice", "7938")


@pytest.mark.parametrize("text", [
    "", "my name is alice", "my name is alice and my number is four two seven",  # too few digits
    "my name is alice and my number is four two seven one two",  # too many
    "my name is zoe and my number is four two seven one",  # not listed
    "alice my favourite number is four two seven one",  # a lead the grammar does not know
])
def test_introduction_rejects_what_it_cannot_read(text: str) -> None:
    assert introduction(PEOPLE, 4).normalize(text) is None


def test_numerals_are_spelled_digit_by_digit() -> None:
    assert spoken_digits(["call", "4271", "or", "12-3"]) == ["call", "four", "two", "seven", "one", "or", "one",
                                                             "two", "three"]
    assert spoken_digits(["٣"]) == ["٣"]  # not an ASCII digit: left alone


def test_a_grammar_spec_pickles_and_builds_the_same_grammar_once() -> None:
    spec = GrammarSpec("introduction", (PEOPLE, 4))
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and again.build() is spec.build()
    assert spec.build().normalize("alice one two three four") == Introduction("Alice", "1234")
    menu = GrammarSpec("menu", ((("sales", ("sales", "buy something")), ("support", ("support",))),))
    assert menu.build().normalize("buy something") == "sales"
    with pytest.raises(ValueError, match="unknown grammar kind 'dance'"):
        GrammarSpec("dance")


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    return PiperSynthesizer(noise_w_scale=0.0, noise_scale=0.0)


def phone(synth: PiperSynthesizer, text: str):  # type: ignore[no-untyped-def]
    return ulaw_decode(ulaw_encode(render_phone(synth, text)))


async def test_the_process_pool_recognises_each_call_in_its_own_pinned_process(piper: PiperSynthesizer) -> None:
    pool = GrammarProcessPool(2)
    await pool.start()
    try:
        assert len(set(pool.pids)) == 2 and os.getpid() not in pool.pids
        yes_no = GrammarSpec("yes_no")
        menu = GrammarSpec("menu", ((("billing", ("billing", "pay my bill")), ("sales", ("sales",))),))
        first = await pool.recognize("call-a", phone(piper, "Yes please."), yes_no)
        second = await pool.recognize("call-b", phone(piper, "No."), yes_no)
        answers = yes_no.build()
        assert (answers.normalize(first.text), answers.normalize(second.text)) == (True, False)
        assert first.engine == "pocketsphinx" and first.confidence > 0.5
        # Each call stays in its process (the least loaded when it first spoke), whatever the grammar.
        assert {pool.process_of("call-a"), pool.process_of("call-b")} == {0, 1}
        pinned = pool.process_of("call-a")
        third = await pool.recognize("call-a", phone(piper, "I want to pay my bill."), menu)
        assert third.text == "" and pool.process_of("call-a") == pinned  # outside the grammar: nothing
        fourth = await pool.recognize("call-a", phone(piper, "Billing."), menu)
        assert menu.build().normalize(fourth.text) == "billing"
        pool.release("call-a")
        pool.release("call-a")  # idempotent
        assert pool.process_of("call-a") is None
        with pytest.raises(ValueError, match="grammars only"):
            await pool.recognize("call-c", phone(piper, "Yes."), None)
    finally:
        await pool.close()


def test_digits_in_reads_numerals_and_words() -> None:
    from asterisk_agent.speech.stt.grammars import digits_in

    assert digits_in("Thank you, Alice. Your number is 4-2, seven one.") == "4271"
    assert digits_in("You called 1 0 0. Your call number is 0 oh 12.") == "100" + "0012"
    assert digits_in("nothing here") == ""


def test_introduction_matches_names_by_sound_not_spelling() -> None:
    grammar = introduction(("Steven", "Anna Smith"), 4)
    assert grammar.normalize("my name is stephen my number is 5857") == Introduction("Steven", "5857")
    assert grammar.normalize("this is anna smith, 1 2 3 4") == Introduction("Anna Smith", "1234")
    assert grammar.normalize("my name is stefan my number is 5857") is None
    assert "Steven" in grammar.hint and "Anna Smith" in grammar.hint


def test_the_demo_judges_a_name_by_sound_but_never_takes_another_callers() -> None:
    from asterisk_agent.demo import heard_name, heard_own

    assert heard_own("Thank you, Maria. Your number is 6-2-6-2.", "Maria", "6262")
    assert heard_name("Thank you, Marita.", "Maria")  # one phone off, nearer Maria than any other name
    assert not heard_name("Thank you, Baker.", "Victor")
    assert not heard_name("Thank you, Karen.", "Carmen")  # another listed name is not a slip
    assert heard_own("Thank you, Brian. Your number is 9-1-5-free.", "Brian", "9153", ["9153", "1234"])
    assert not heard_own("Thank you, Brian. Your number is 9-1-5-free.", "Brian", "9153", ["9153", "9150"])
    assert not heard_own("Thank you, Maria. Your number is 6-1-2-4.", "Maria", "6262")


def test_letters_that_sound_like_digits_count_only_inside_a_spelled_group() -> None:
    from asterisk_agent.speech.stt.grammars import digits_in

    assert digits_in("Your number is 4-1-A-1.") == "4181"
    assert digits_in("Your number is 2-O-5-5.") == "2055"
    assert digits_in("A 4-1 deal") == "41"  # a lone letter A stays a letter
    assert spoken_digits(["a-b-1"]) == ["a", "b", "one"]  # not a spelled number: only the digit is read
