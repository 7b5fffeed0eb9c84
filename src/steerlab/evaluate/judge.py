"""An LLM judge for introspection trials through any OpenAI-compatible chat endpoint (optional; offline grading
is ``sl.analysis.introspection.grade``).

    judge = OpenAIJudge("http://127.0.0.1:8000/v1", model="gpt-4o", api_key="...")
    result = sl.analysis.introspection(model, judge=judge)

The judge is asked for JSON ``{"detected": bool, "identified": bool}`` under the same rule as the offline
grader: identification needs the claim of detection *before* the concept word first appears.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from ..analysis.introspection import Judgement, _concept_at
from ..errors import SteerlabError

JUDGE_PROMPT = (
    "You grade one trial of an experiment. A language model was asked whether it notices an injected thought "
    "and, if so, what it is about. {concept_line}\n\nIts reply:\n<<<\n{reply}\n>>>\n\n"
    "Answer with JSON only: {{\"detected\": true|false, \"identified\": true|false}}. \"detected\" is true when the "
    "reply affirms that it notices an injected thought (not when it denies or is unsure without affirming). "
    "\"identified\" is true only when it affirms detection and then names the concept, and the affirmation comes "
    "before the concept word first appears in the reply.")


class OpenAIJudge:
    """Grades a reply by asking ``model`` at ``base_url`` (``.../v1``) with ``POST /chat/completions``."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0):
        if not base_url.startswith(("http://", "https://")):
            raise SteerlabError(f"base_url={base_url!r} must start with http:// or https://")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout

    def __call__(self, reply: str, concept: str | None) -> Judgement:
        line = (f"The injected concept was {concept!r}." if concept else
                "This was a control trial: nothing was injected, so there is no concept to name.")
        body = {"model": self.model, "temperature": 0,
                "messages": [{"role": "user", "content": JUDGE_PROMPT.format(concept_line=line, reply=reply)}]}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = json.loads(response.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as e:
            raise SteerlabError(f"the judge at {self.url} did not answer with JSON: {e}") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise SteerlabError(f"the judge at {self.url} sent no choices[0].message.content") from None
        match = re.search(r"\{.*\}", content or "", re.DOTALL)
        try:
            verdict = json.loads(match.group(0)) if match else None
        except json.JSONDecodeError:
            verdict = None
        if not isinstance(verdict, dict) or "detected" not in verdict:
            raise SteerlabError(f"the judge's answer is not the JSON asked for: {content!r}")
        detected = bool(verdict.get("detected"))
        mentioned = concept is not None and _concept_at(reply.lower(), concept) >= 0
        return Judgement(detected, bool(detected and verdict.get("identified") and concept), mentioned)
