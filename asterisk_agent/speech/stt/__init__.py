"""Speech to text behind one interface (:mod:`.base`): grammar recognition with pocketsphinx
(:mod:`.pocketsphinx_engine`), grammars built as JSGF text (:mod:`.grammars`).

The engines are imported from their modules (``asterisk_agent.speech.stt.pocketsphinx_engine``), so importing
this package loads no model and no engine library.
"""

from asterisk_agent.speech.stt.base import (
    Alternative,
    Recognition,
    RecognizerEngine,
    RecognizerFactory,
    StreamingRecognizer,
)
from asterisk_agent.speech.stt.grammars import (
    DateTimeValue,
    Grammar,
    UnknownWordError,
    dates_and_times,
    digits,
    human_request,
    menu,
    names,
    yes_no,
)

__all__ = [
    "Alternative",
    "DateTimeValue",
    "Grammar",
    "Recognition",
    "RecognizerEngine",
    "RecognizerFactory",
    "StreamingRecognizer",
    "UnknownWordError",
    "dates_and_times",
    "digits",
    "human_request",
    "menu",
    "names",
    "yes_no",
]
