"""Studies that train: the loss ablation (Fig. 5), the lambda sweep and the
teacher-strength study. Above training and evaluation; they use the training
registry's specs and runners and the evaluators."""
