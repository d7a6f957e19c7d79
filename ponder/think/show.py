"""The search tree in the terminal: steps, scores, visits, the chosen path marked."""

from __future__ import annotations

from ponder.think.base import Node, Thought


def _line(node: Node, width: int) -> str:
    mark = "*" if node.chosen else " "
    score = f"{node.score:.3f}" if node.score is not None else "  -  "
    text = node.text.replace("\n", " | ") if node.text else "(root)" if node.answer is None else ""
    if len(text) > width:
        text = text[: width - 3] + "..."
    answer = f"  => {node.answer}".replace("\n", " | ") if node.answer is not None else ""
    visits = f"  (visits {node.visits})" if node.visits > 1 else ""
    return f"{mark} [{score}] {text}{answer}{visits}"  # the mark follows the branch: `|-* [0.9] step`


def render_tree(root: Node, width: int = 72, max_nodes: int = 2000) -> str:
    """One line per node, indented by depth; `*` marks the chosen path, [score] the verifier's score."""
    lines: list[str] = []
    stack: list[tuple[Node, str, str]] = [(root, "", "")]
    while stack:
        node, lead, branch = stack.pop()
        if len(lines) == max_nodes:
            lines.append(f"... ({sum(1 for _ in root.walk()) - max_nodes} more nodes)")
            break
        lines.append(lead + branch + _line(node, width))
        child_lead = lead + ("" if not branch else "   " if branch.startswith("`") else "|  ")
        kids = node.children
        for i in reversed(range(len(kids))):
            stack.append((kids[i], child_lead, "`-" if i == len(kids) - 1 else "|-"))
    return "\n".join(lines)


def describe(thought: Thought) -> str:
    """The tree with a one-line legend, or a note that the strategy kept none."""
    if thought.tree is None:
        return "(no search tree)"
    nodes = sum(1 for _ in thought.tree.walk())
    head = f"search tree: {nodes} nodes; * chosen path, [score] verifier score, => answer"
    if thought.budget_exhausted:
        head += "; the budget ran out: " + ("best answer found by then" if thought.answer else "no answer")
    return head + "\n" + render_tree(thought.tree)
