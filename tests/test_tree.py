# Copyright © 2026 mlx-specstream authors. Apache-2.0.
import numpy as np
import pytest
from conftest import tiny_model

from mlx_specstream.decoding.tree import (
    Tree,
    TreeShape,
    best_first_paths,
    cartesian_paths,
)
from mlx_specstream.models.msa import Rows


def test_toy_tree_layout():
    # root -> 11 -> 12, root -> 13
    tree = Tree.from_paths(10, [(11, 12), (13,)])
    assert tree.tokens == (10, 11, 12, 13)
    assert tree.parents == (-1, 0, 1, 0)
    assert tree.depths.tolist() == [0, 1, 2, 1]
    expected = np.array(
        [
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 1, 0],
            [1, 0, 0, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(tree.ancestor_mask, expected)
    assert tree.path(2) == [0, 1, 2]
    assert tree.children == [[1, 3], [2], [], []]


def test_shared_prefixes_become_one_node():
    tree = Tree.from_paths(0, [(1, 2), (1, 3), (1, 2, 4)])
    assert tree.tokens == (0, 1, 2, 3, 4)
    assert tree.parents == (-1, 0, 1, 1, 2)


def test_cartesian_tree_is_the_product_of_top_k():
    tokens = np.array([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    paths = cartesian_paths(tokens, (2, 2, 1))
    assert paths == [(5, 8, 11), (5, 9, 11), (6, 8, 11), (6, 9, 11)]
    tree = Tree.from_paths(1, paths)
    assert tree.size == 1 + 2 + 4 + 4 == TreeShape("cartesian", (2, 2, 1)).size
    # Tokens repeat across branches, as in the paper's Fig. 8.
    assert tree.tokens == (1, 5, 8, 11, 9, 11, 6, 8, 11, 9, 11)
    assert tree.depths.tolist() == [0, 1, 2, 3, 2, 3, 1, 2, 3, 2, 3]


def test_best_first_takes_nodes_by_joint_probability():
    tokens = np.array([[5, 6], [7, 8]])
    logprobs = np.log(np.array([[0.6, 0.4], [0.9, 0.1]]))
    # joint: (5)=.6 (6)=.4 (5,7)=.54 (6,7)=.36 (5,8)=.06 (6,8)=.04
    assert best_first_paths(tokens, logprobs, budget=5) == [(5,), (5, 7), (6,), (6, 7)]
    assert best_first_paths(tokens, logprobs, budget=3) == [(5,), (5, 7)]
    assert best_first_paths(tokens, logprobs, budget=3, max_depth=1) == [(5,), (6,)]


def test_keep_reindexes_a_subtree():
    tree = Tree.from_paths(0, [(1, 2), (3, 4)])  # nodes 0,1,2,3,4
    sub = tree.keep([0, 3, 4])
    assert sub.tokens == (0, 3, 4) and sub.parents == (-1, 0, 1)
    assert tree.truncate_depth(1).tokens == (0, 1, 3)
    assert tree.within(3) is tree  # depth 2: a pass emits at most 3 tokens
    assert tree.within(2).tokens == (0, 1, 3)
    assert tree.within(1).tokens == (0,)


def test_msa_mask_literal():
    """Main rows see ancestors; stream j of an anchor sees its ancestry and streams <= j."""
    model = tiny_model()  # γ = 3
    tree = Tree.from_paths(0, [(1,), (2,)])  # root with two children
    rows = Rows.tree(tree.ancestor_mask, tree.depths, offset=2, streams=model.streams)
    rows = rows.with_streams([1])
    m = np.array(rows.mask).astype(int)
    expected = np.array(
        # prefix | r  c1 c2 | s1 s2 s3 (streams of c1)
        [
            [1, 1, 1, 0, 0, 0, 0, 0],  # root
            [1, 1, 1, 1, 0, 0, 0, 0],  # child 1
            [1, 1, 1, 0, 1, 0, 0, 0],  # child 2
            [1, 1, 1, 1, 0, 1, 0, 0],  # stream 1 of child 1
            [1, 1, 1, 1, 0, 1, 1, 0],  # stream 2
            [1, 1, 1, 1, 0, 1, 1, 1],  # stream 3
        ]
    )
    np.testing.assert_array_equal(m, expected)
    # Main rows at prefix + depth; stream rows at their anchor's position.
    assert np.array(rows.positions).tolist() == [2, 3, 3, 3, 3, 3]


def test_tree_shape_validation():
    with pytest.raises(ValueError, match="tree kind"):
        TreeShape("beam")
    with pytest.raises(ValueError, match="budget"):
        TreeShape(budget=0)
    with pytest.raises(ValueError, match="branching"):
        TreeShape("cartesian", (2, 0))


def test_mixed_drafter_keeps_the_budget():
    from mlx_specstream.decoding.drafters import MixedDrafter, StreamDrafter, StreamTopK
    from mlx_specstream.decoding.tree import TreeShape

    g, K = 4, 8
    rng = np.random.default_rng(0)
    streams = StreamTopK(
        rng.integers(100, 200, (g, K)),
        -np.sort(rng.random((g, K)), axis=1) - np.arange(g)[:, None],
    )
    history = [5, 6, 7, 8, 9, 10, 5, 6]  # "5 6" recurs: lookup proposes 7 8 9 10 5 6
    for budget in (4, 6, 16):
        drafter = MixedDrafter(StreamDrafter(TreeShape(budget=budget)))
        tree = drafter.draft(6, streams, history)
        assert tree.size == budget
        # The chain comes first and takes at most half the budget.
        chain = (7, 8, 9, 10, 5, 6)[: budget // 2]
        assert tree.tokens[1 : 1 + len(chain)] == chain
        assert tree.parents[1 + len(chain)] != len(chain)  # the chain stops there


def test_depth_penalty_moves_nodes_to_shallow_depths():
    from mlx_specstream.decoding.drafters import StreamDrafter, StreamTopK
    from mlx_specstream.decoding.tree import TreeShape

    # Streams equally sure at every depth: without a penalty the best 8 nodes make
    # a deep chain plus siblings; the penalty trades deep nodes for wider levels.
    lp = np.log(np.array([[0.6, 0.2, 0.1, 0.05]] * 4))
    streams = StreamTopK(np.arange(16).reshape(4, 4) + 100, lp)
    flat = StreamDrafter(TreeShape(budget=8, depth_penalty=0.0)).draft(1, streams, [])
    pen = StreamDrafter(TreeShape(budget=8, depth_penalty=1.0)).draft(1, streams, [])
    assert flat.size == pen.size == 8
    assert pen.depths.max() < flat.depths.max()
    assert pen.depths.mean() < flat.depths.mean()
    with pytest.raises(ValueError, match="depth_penalty"):
        TreeShape(depth_penalty=-0.1)


@pytest.mark.parametrize("seed", range(5))
def test_bounded_walk_takes_the_same_nodes_asking_less(seed):
    from mlx_specstream.decoding.tree import best_first_walk

    g, K = 4, 6
    rng = np.random.default_rng(seed)
    totals = -rng.random(g)  # each row's logsumexp
    rows = {}

    def children(path):
        """A random sorted row per path (the same on every ask), its total totals[g]."""
        if path not in rows:
            s = np.sort(rng.normal(size=K) * 2)[::-1]
            s += totals[len(path)] - np.logaddexp.reduce(s)
            rows[path] = (rng.permutation(50)[:K], s)
        return rows[path]

    asked, n_asked = [], {"eager": 0, "lazy": 0}

    def counted(path):
        asked.append(path)
        return children(path)

    for budget in (2, 8, 24):
        asked.clear()
        eager = best_first_walk(counted, budget, g)
        n_asked["eager"] += len(asked)
        asked.clear()
        lazy = best_first_walk(counted, budget, g, bounds=totals)
        n_asked["lazy"] += len(asked)
        assert lazy == eager
        # Scores are taken in order: each node's score is at most its predecessor's.
        score = [
            sum(
                children(p[:i])[1][list(children(p[:i])[0]).index(p[i])]
                for i in range(len(p))
            )
            for p in lazy
        ]
        assert all(a >= b - 1e-12 for a, b in zip(score, score[1:]))
    assert n_asked["lazy"] < n_asked["eager"]
