"""The evaluators: each turns the embeddings of an evaluation set (made by
:class:`deocc_jax.evaluation.evaluator.Evaluator` in one sharded pass) into
results and writes its own tables.

    verification       pairs by cosine, 10 folds, paired differences (Fig. 4 / Table 2)
                       verification_tables writes its tables and plots
    identification     rank-1 / CMC against a clean gallery (Table 1)
    segmentation       the occlusion segmenter's IoU
    completion_grid    the first faces of a set, every fill side by side
    training_curves    every stage's training losses

:mod:`deocc_jax.evaluation.job` builds the sets and runs them.
"""
