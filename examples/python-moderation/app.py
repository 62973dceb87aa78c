"""A chat moderation filter in Python (componentize-py, world `message-filter-plugin`).

Every text message a client sends is checked against a word list; a message naming a listed word
has each occurrence masked with asterisks, or is dropped, as configured.

Configuration (JSON):

    {
      "words": ["darn", "heck"],
      "action": "replace",
      "notice": "Your message was not sent: it uses a word this room does not allow.",
      "directions": ["to-server"],
      "max_strikes": 0
    }

- `words` (required, at least one): matched ignoring case, as whole words (`heck` masks "Heck!"
  but not "checkered"); a phrase may hold spaces ("oh heck").
- `action`: `"replace"` (the default) masks each listed word with as many `*` as it has
  characters and forwards the rest of the message; `"drop"` does not forward the message at all.
- `notice`: with `"drop"`, the text answered to the sender (only to the sender) so that they know
  their message went nowhere; `""` drops silently. The default is the sentence above.
- `directions`: which messages are moderated: `"to-server"` (what clients send, the default)
  and/or `"to-client"` (what the backend sends). Others are forwarded untouched.
- `max_strikes`: close the session with 1008 (policy violation) once this many of its messages
  were moderated; `0` (the default) never closes. The count is the session's state, which the
  gateway keeps between messages: no instance is tied to a session.

Binary messages are forwarded untouched.

Build: componentize-py -d ../../wit -w message-filter-plugin componentize app -o python-moderation.wasm
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, message_types as mt, types

_DEFAULT_NOTICE = "Your message was not sent: it uses a word this room does not allow."
_DIRECTIONS = {"to-server": mt.Direction.TO_SERVER, "to-client": mt.Direction.TO_CLIENT}

_pattern = None
_drop = False
_notice = b""
_directions = frozenset([mt.Direction.TO_SERVER])
_max_strikes = 0


def _fail(field: str, why: str):
    raise Err(f"invalid config: {field}: {why}")


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        global _pattern, _drop, _notice, _directions, _max_strikes
        try:
            parsed = json.loads(config or "{}")
        except ValueError as e:
            raise Err(f"invalid config: {e}")
        if not isinstance(parsed, dict):
            _fail("config", "a JSON object is required")
        words = parsed.get("words")
        if not isinstance(words, list) or not words:
            _fail("words", "a non-empty list of strings is required")
        for i, word in enumerate(words):
            if not isinstance(word, str) or not word.strip():
                _fail(f"words[{i}]", "a non-empty string is required")
        action = parsed.get("action", "replace")
        if action not in ("replace", "drop"):
            _fail("action", f'"replace" or "drop" is required, not {action!r}')
        notice = parsed.get("notice", _DEFAULT_NOTICE)
        if not isinstance(notice, str):
            _fail("notice", "a string is required")
        directions = parsed.get("directions", ["to-server"])
        if not isinstance(directions, list) or not directions:
            _fail("directions", 'a non-empty list of "to-server" and "to-client" is required')
        for i, d in enumerate(directions):
            if d not in _DIRECTIONS:
                _fail(f"directions[{i}]", f'"to-server" or "to-client" is required, not {d!r}')
        max_strikes = parsed.get("max_strikes", 0)
        if not isinstance(max_strikes, int) or isinstance(max_strikes, bool) or not 0 <= max_strikes <= 0xFFFF:
            _fail("max_strikes", "an integer from 0 to 65535 is required")

        # Longest first, so that "oh heck" is masked whole rather than as "oh ****"; any run of
        # white space matches the space between the words of a phrase.
        phrases = sorted({" ".join(w.split()).lower() for w in words}, key=len, reverse=True)
        alternatives = [r"\s+".join(re.escape(part) for part in p.split()) for p in phrases]
        # Whole words: no letter, digit or underscore right before or after the match.
        _pattern = re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)
        _drop = action == "drop"
        _notice = notice.encode()
        _directions = frozenset(_DIRECTIONS[d] for d in directions)
        _max_strikes = max_strikes
        host.log(
            types.LogLevel.INFO,
            f"{len(alternatives)} words, {action}, moderating {', '.join(directions)}",
        )


def _strikes(state: bytes) -> int:
    return int.from_bytes(state, "little")


def _mask(match: "re.Match") -> str:
    return "".join(" " if c.isspace() else "*" for c in match.group(0))


_FORWARD = mt.MessageDecision(actions=[mt.Action_Forward()], state=None)


class MessageFilter(exports.MessageFilter):
    def on_open(self, session: mt.SessionOpen) -> mt.OpenDecision:
        return mt.OpenDecision_Accept(mt.Accept(subprotocol=None, state=b""))

    def on_message(self, message: mt.Message, state: bytes) -> mt.MessageDecision:
        if message.opcode != mt.Opcode.TEXT or message.direction not in _directions:
            return _FORWARD
        text = message.payload.decode("utf-8", errors="replace")
        masked, found = _pattern.subn(_mask, text)
        if found == 0:
            return _FORWARD
        actions = []
        if not _drop:
            actions.append(mt.Action_Send(mt.Outgoing(mt.Opcode.TEXT, masked.encode())))
        elif _notice:
            actions.append(mt.Action_Answer(mt.Outgoing(mt.Opcode.TEXT, _notice)))
        if _max_strikes == 0:
            return mt.MessageDecision(actions=actions, state=None)
        strikes = _strikes(state) + 1
        if strikes >= _max_strikes:
            actions.append(
                mt.Action_Close(mt.CloseFrame(1008, f"{strikes} moderated messages"))
            )
        return mt.MessageDecision(actions=actions, state=strikes.to_bytes(2, "little"))

    def on_close(self, close: mt.SessionClose, state: bytes) -> None:
        strikes = _strikes(state)
        if strikes:
            host.log(types.LogLevel.DEBUG, f"session ended after {strikes} moderated messages")
