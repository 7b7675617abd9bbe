"""Classical face recognisers and completions: the paper's Table 1 baselines.

Layer 1 (like ``models/`` and ``losses/``): pure functions over arrays, no
training loop, no evaluation set. ``subspace`` (eigenfaces, LPP), ``gabor``
(the Gabor wavelet bank of GW+PCA), ``src`` (sparse-representation
classification), ``rpca`` (robust PCA completion) and ``graph_laplace``
(Graph-Laplace completion).
"""
