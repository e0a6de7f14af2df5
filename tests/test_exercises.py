"""The exercises: every skeleton fails with a hint from the engine, every solution passes,
with real curl through the local mesh; bad answers are a FAIL line, never a traceback. The
notebook runs both ways under papermill (skeletons: all FAIL; solutions: all PASS)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from egresskit.exercises import EXERCISES, Workshop
from egresskit.runner import KERNEL_NAME, kernel_manager
from egresskit.tutorial import Tutorial

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "05-exercises.ipynb"

#: What the hint must say for each skeleton: built from the engine's reasoning.
SKELETON_HINTS = {
    1: "your HTTPRoute httpbin-get has no hostnames, so it also allows google.com/get",
    2: "your TLSRoute github-api has no hostnames, so it also allows github.com (its SNI)",
    3: "rule 0 of your HTTPRoute httpbin-post has no method, so it also allows GET "
    "httpbin.org/post",
    4: "rule 0 of your HTTPRoute httpbin-ticket matches no header, so it also allows "
    "httpbin.org/headers without any header",
    5: "your HTTPRoute example-to-internal has no hostnames, so it also sends google.com/ "
    "to internal-egress",
    6: "none of your routes is attached to port 6379 (TCPRoute redis on port 80), so the "
    "default route tcp-egress-deny decided",
    7: "the match of your GRPCRoute health-check names no method, so it also allows "
    "helloworld.Greeter/SayHello",
}


@pytest.fixture(scope="module")
def workshop() -> Iterator[Workshop]:
    with Tutorial("local") as t:
        yield Workshop(t.lesson)


def test_there_are_at_least_seven_tasks_covering_the_issue() -> None:
    assert len(EXERCISES) >= 7
    kinds = {
        line.split(": ", 1)[1]
        for ex in EXERCISES
        for line in ex.solution.splitlines()
        if line.startswith("kind: ")
    }
    assert kinds >= {"HTTPRoute", "TLSRoute", "TCPRoute", "GRPCRoute"}


@pytest.mark.parametrize("number", [ex.number for ex in EXERCISES])
def test_the_skeleton_fails_with_a_hint_and_the_solution_passes(
    workshop: Workshop, number: int
) -> None:
    ex = EXERCISES[number - 1]
    before = workshop.check(number, ex.skeleton)
    assert not before.ok
    assert before.verdict.startswith("FAIL ")
    assert f"Hint: {SKELETON_HINTS[number]}" in before.verdict
    after = workshop.check(number, ex.solution)
    assert after.ok, str(after)
    assert after.verdict.startswith(f"PASS exercise {number} ")
    assert all(p.ok for p in after.probes)


def test_a_yaml_error_is_a_fail_line_naming_where(workshop: Workshop) -> None:
    result = workshop.check(1, "kind: [")
    assert not result.ok
    assert result.verdict.startswith("FAIL your manifest was refused: your answer: document 1:")
    assert "line 1, column 8" in result.verdict


def test_a_misspelt_field_is_a_fail_that_names_it(workshop: Workshop) -> None:
    typo = EXERCISES[0].solution.replace("hostnames:", "hostname:")
    result = workshop.check(1, typo)
    assert result.verdict == (
        "FAIL your manifest was refused: your answer: document 1 (HTTPRoute "
        "egress-test/httpbin-get): spec.hostname: expected a field the HTTPRoute CRD knows "
        '(did you mean "hostnames"?), found unknown field "spec.hostname"'
    )


def test_a_wrong_namespace_is_a_fail_naming_the_field(workshop: Workshop) -> None:
    answer = EXERCISES[0].solution.replace(
        "namespace: egress-test\nspec", "namespace: default\nspec"
    )
    result = workshop.check(1, answer)
    assert result.verdict == (
        "FAIL HTTPRoute httpbin-get: metadata.namespace: expected 'egress-test' (the client's "
        "namespace), found 'default'"
    )


def test_a_route_linkerd_refuses_is_a_fail_with_its_reason(workshop: Workshop) -> None:
    answer = EXERCISES[0].solution.replace("- name: all-egress-traffic", "- name: elsewhere")
    result = workshop.check(1, answer)
    assert not result.ok
    assert "NOT accepted on EgressNetwork elsewhere port 80, reason NoMatchingParent" in (
        result.verdict
    )


def test_an_empty_answer_fails(workshop: Workshop) -> None:
    assert workshop.check(2, "# nothing yet\n").verdict.startswith("FAIL the answer is empty")


def test_a_check_starts_from_the_base_again(workshop: Workshop) -> None:
    # Exercise 5's solution sends example.com inside; the next check must not inherit it.
    workshop.check(5, EXERCISES[4].solution)
    result = workshop.check(1, EXERCISES[0].skeleton)
    assert [
        o.display
        for o in workshop.lesson.cluster.objects()  # type: ignore[attr-defined]
        if o.kind == "HTTPRoute"
    ] == ["HTTPRoute egress-test/httpbin-get"]
    assert not result.ok


def _check_verdicts(executed: Path) -> list[str]:
    cells = json.loads(executed.read_text())["cells"]
    verdicts = []
    for cell in cells:
        if "exercise-check" not in cell["metadata"].get("tags", []):
            continue
        text = "".join(
            "".join(o.get("data", {}).get("text/plain", "")) + "".join(o.get("text", ""))
            for o in cell["outputs"]
        )
        assert "Traceback" not in text and not any(
            o["output_type"] == "error" for o in cell["outputs"]
        ), text
        verdicts.append(text.strip().splitlines()[-1])
    return verdicts


@pytest.mark.slow
@pytest.mark.parametrize(("solutions", "verdict"), [(False, "FAIL "), (True, "PASS ")])
def test_the_notebook_under_papermill_fails_on_skeletons_and_passes_on_solutions(
    tmp_path: Path, solutions: bool, verdict: str
) -> None:
    import papermill

    out = tmp_path / "05.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(out),
        parameters={"solutions": solutions, "output_dir": str(tmp_path)},
        kernel_name=KERNEL_NAME,
        kernel_manager_class=kernel_manager(),
        progress_bar=False,
        cwd=str(NOTEBOOK.parent),
    )
    verdicts = _check_verdicts(out)
    assert len(verdicts) == len(EXERCISES)
    assert all(v.startswith(verdict) for v in verdicts), verdicts


WRONG_ANSWERS = [
    pytest.param(
        2,
        EXERCISES[1].solution.replace("- api.github.com", "- github.com"),
        # The engine's own line about the route follows (its wording is explain's).
        "FAIL GET https://api.github.com/: expected an answer from api.github.com, saw a "
        "closed connection (curl exit 35). Hint: no rule of yours matched it, so the default "
        "route tls-egress-deny decided. The engine says: TLSRoute github-api: ",
        id="sni-of-the-wrong-host",
    ),
    pytest.param(
        7,
        EXERCISES[6].solution.replace("method: Check", "method: Watch"),
        "FAIL gRPC grpc.health.v1.Health/Check to grpc.example.com:50051: expected "
        "grpc-status OK, saw grpc-status PERMISSION_DENIED. Hint: no rule of yours matched "
        "it, so the default route grpc-egress-deny decided.",
        id="grpc-wrong-method",
    ),
    pytest.param(
        5,
        EXERCISES[4].solution.replace("kind: Service", "kind: Servic"),
        "but a backend is not resolved (InvalidKind",
        id="backend-kind-typo",
    ),
]


@pytest.mark.parametrize(("number", "answer", "says"), WRONG_ANSWERS)
def test_a_wrong_answer_gets_a_hint_from_the_engine(
    workshop: Workshop, number: int, answer: str, says: str
) -> None:
    result = workshop.check(number, answer)
    assert not result.ok
    assert says in result.verdict


def test_solutions_mode_checks_the_solution_whatever_the_answer(workshop: Workshop) -> None:
    graded = Workshop(workshop.lesson, use_solutions=True)
    result = graded.check(1, "")
    assert result.ok
    assert str(result).splitlines()[0].endswith("(its solution: solutions = True)")
