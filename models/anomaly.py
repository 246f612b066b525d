"""River's Half-Space Trees, scored and learned a whole micro-batch at a time.

The model of record is a real ``river.anomaly.HalfSpaceTrees``. Its trees are
complete binary trees whose shape (split feature and threshold of every node)
is drawn from the seed when they are built; learning only changes the node
masses (``l_mass`` counts the events of the current window, ``r_mass`` holds
the previous window's counts, swapped every ``window_size`` events). So
:class:`BatchHalfSpaceTrees` mirrors the shape into numpy arrays (heap order:
the children of node i are 2i+1 and 2i+2) and, per micro-batch:

- walks every row down every tree at once (``height`` vectorised gather steps)
  to its leaf; in a complete tree the leaf fixes the whole path;
- scores: River's ``score_one`` of a path depends only on ``r_mass``, which
  changes only at a window pivot, so each leaf's score is tabulated once per
  pivot and a row's score is a sum of one table look-up per tree;
- learns: one ``bincount`` of the leaves per window segment, summed up the
  tree levels, is the ``l_mass`` increment of every node; a batch is split
  where a window ends.

Scores equal River's ``score_one`` on a model that learned everything before
the batch, and masses equal those of River's ``learn_one`` on the same events in
order (tests check both, bit for bit). :meth:`BatchHalfSpaceTrees.to_river`
writes the masses back into the River object, keyed by feature name, for a
notebook.

>>> import numpy as np
>>> hst = BatchHalfSpaceTrees(("a", "b"), n_trees=3, height=4, window_size=50, seed=1)
>>> rng = np.random.default_rng(0)
>>> hst.learn(hst.leaves(rng.random((120, 2)) * 0.2 + 0.4))
>>> normal, odd = hst.score(hst.leaves(np.array([[0.5, 0.5], [0.95, 0.02]])))
>>> bool(odd > normal)
True
>>> river = hst.to_river()
>>> float(river.score_one({"a": 0.95, "b": 0.02})) == float(odd)
True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
from river.anomaly import HalfSpaceTrees

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _heap_order(tree: Any) -> Iterator[tuple[int, Any]]:
    """(heap index, node) of every node of a River padded tree."""
    stack = [(0, tree)]
    while stack:
        index, node = stack.pop()
        yield index, node
        children = getattr(node, "children", None)
        if children:
            stack.append((2 * index + 1, children[0]))
            stack.append((2 * index + 2, children[1]))


class BatchHalfSpaceTrees:
    """A River ``HalfSpaceTrees`` over named features in [0, 1], scored and learned per batch.

    Columns of the matrices given to :meth:`leaves` follow ``features``. Call
    :meth:`leaves` once per batch, then :meth:`score` and/or :meth:`learn`.
    """

    def __init__(self, features: tuple[str, ...], n_trees: int, height: int, window_size: int, seed: int) -> None:
        self.features = features
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self._river = self._build_river()
        nodes = 2 ** (height + 1) - 1
        column = {name: i for i, name in enumerate(features)}
        feature = np.zeros((n_trees, nodes), dtype=np.intp)
        threshold = np.zeros((n_trees, nodes), dtype=np.float64)
        for t, tree in enumerate(self._river.trees):
            for index, node in _heap_order(tree):
                if getattr(node, "children", None):
                    feature[t, index] = column[node.feature]
                    threshold[t, index] = node.threshold
        # flat (tree, node) tables; a node's flat index is tree * nodes + heap index
        self._feature = feature.ravel()
        self._threshold = threshold.ravel()
        self._tree_base = (np.arange(n_trees, dtype=np.intp) * nodes)[:, None]
        first_leaf = 2**height - 1
        # heap index of a leaf -> its number in the flat (tree, leaf) tables
        self._leaf_base = (np.arange(n_trees, dtype=np.intp) * 2**height)[:, None] - first_leaf
        # every node on each leaf's path, as (tree * nodes + heap index): row g = tree * 2**height + position
        position = np.arange(2**height, dtype=np.intp)
        path = np.stack([(2**d - 1) + (position >> (height - d)) for d in range(height + 1)], axis=1)
        self._paths = (self._tree_base[:, :, None] + path[None]).reshape(n_trees * 2**height, height + 1)
        self.l_mass_: IntArray = np.zeros((n_trees, nodes), dtype=np.int64)
        self.r_mass_: IntArray = np.zeros((n_trees, nodes), dtype=np.int64)
        self.counter_ = 0
        self.first_window_ = True
        self._leaf_score: IntArray | None = None

    def _build_river(self) -> HalfSpaceTrees:
        """River's model with its trees built exactly as its first ``learn_one`` builds them."""
        river = HalfSpaceTrees(n_trees=self.n_trees, height=self.height, window_size=self.window_size, seed=self.seed)
        river.learn_one(dict.fromkeys(self.features, 0.0))  # type: ignore[no-untyped-call]  # builds the trees; to_river() overwrites the masses
        return river

    @property
    def max_score(self) -> int:
        """River's normaliser: every tree's every node at full window mass."""
        return int(self.n_trees * self.window_size * (2 ** (self.height + 1) - 1))

    def leaves(self, x: FloatArray) -> IntArray:
        """The leaf each row reaches in each tree, numbered ``tree * 2**height + position``: shape (trees, rows).

        A row goes left where its value is below the node's threshold, as in River.
        """
        width = x.shape[1]
        values = np.ascontiguousarray(x, dtype=np.float64).ravel()
        row_base = (np.arange(len(x), dtype=np.intp) * width)[None, :]
        node = np.zeros((self.n_trees, len(x)), dtype=np.intp)
        for _ in range(self.height):
            flat = node + self._tree_base
            below = values[row_base + self._feature[flat]] < self._threshold[flat]
            node = 2 * node + 2 - below
        leaves: IntArray = node + self._leaf_base
        return leaves

    def score(self, leaves: IntArray) -> FloatArray:
        """River's ``score_one`` for each row (0 until the first window is complete)."""
        if self.first_window_:
            return np.zeros(leaves.shape[1])
        if self._leaf_score is None:
            self._leaf_score = self._tabulate_leaf_scores()
        total: IntArray = self._leaf_score[leaves].sum(axis=0)
        return 1.0 - total / self.max_score

    def _tabulate_leaf_scores(self) -> IntArray:
        """Per (tree, leaf), River's path sum: r_mass * 2**depth down to the first node under the size limit."""
        size_limit = 0.1 * self.window_size
        root = self.r_mass_[:, :1]
        total, alive = root.copy(), root >= size_limit
        for depth in range(1, self.height + 1):
            r = self.r_mass_[:, 2**depth - 1 : 2 ** (depth + 1) - 1]
            alive = np.repeat(alive, 2, axis=1)
            total = np.repeat(total, 2, axis=1) + np.where(alive, r << depth, 0)
            alive &= r >= size_limit
        return total.ravel()

    def learn(self, leaves: IntArray) -> None:
        """River's ``learn_one`` for each row, in order (the window pivots where it ends)."""
        trees, rows = leaves.shape
        if not rows:
            return
        # split the batch where windows end: segment k of the rows pivots at its end (except maybe the last)
        first = min(rows, self.window_size - self.counter_)
        ends = [first, *range(first + self.window_size, rows, self.window_size)]
        if ends[-1] != rows:
            ends.append(rows)
        segment = np.repeat(np.arange(len(ends), dtype=np.intp), np.diff([0, *ends]))
        nodes = 2 ** (self.height + 1) - 1
        # each row adds one to every node on its path in every tree (one bincount, whatever the batch size)
        flat = self._paths[leaves] + (segment * (trees * nodes))[None, :, None]
        node_counts = np.bincount(flat.ravel(), minlength=len(ends) * trees * nodes).reshape(len(ends), trees, nodes)
        start = 0
        for k, end in enumerate(ends):
            self.l_mass_ += node_counts[k]
            self.counter_ += end - start
            start = end
            if self.counter_ == self.window_size:
                self.r_mass_ = self.l_mass_
                self.l_mass_ = np.zeros_like(self.r_mass_)
                self.first_window_ = False
                self.counter_ = 0
                self._leaf_score = None

    def state(self) -> dict[str, Any]:
        """What the model learned: masses and window position (the shape comes from the parameters)."""
        return {
            "l_mass": self.l_mass_.astype(np.int32),
            "r_mass": self.r_mass_.astype(np.int32),
            "counter": self.counter_,
            "first_window": self.first_window_,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` of a model built with the same parameters."""
        self.l_mass_ = np.asarray(state["l_mass"], dtype=np.int64).reshape(self.l_mass_.shape)
        self.r_mass_ = np.asarray(state["r_mass"], dtype=np.int64).reshape(self.r_mass_.shape)
        self.counter_ = int(state["counter"])
        self.first_window_ = bool(state["first_window"])
        self._leaf_score = None

    def to_river(self) -> HalfSpaceTrees:
        """The River model of record with the current masses and window position written in."""
        for t, tree in enumerate(self._river.trees):
            for index, node in _heap_order(tree):
                node.l_mass = int(self.l_mass_[t, index])
                node.r_mass = int(self.r_mass_[t, index])
        self._river.counter = self.counter_
        self._river._first_window = self.first_window_
        return self._river
