"""The known mistakes of the graded exercises, in the words the student who makes one reads.

Each known mistake has a name (that of its sample in autograder/samples/), what the code does,
why that is wrong, a hint and the section of the chapter that explains the idea. The grader
recognises them from its own probes (autograder/exercises/) and shows these words on the
feedback page; the visible tests of the notebooks show the same words when they catch one
(course/diagnosis.py).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KNOWN", "Known"]


@dataclass(frozen=True)
class Known:
    """What a student who made the mistake is told."""

    does: str  # what the code does, as the student would recognise it
    why: str  # why that is wrong
    hint: str  # the concept to revisit
    section: str  # where the chapter explains it

    def text(self) -> str:
        return f"{self.does} {self.why} Hint: {self.hint} (see {self.section})"


KNOWN = {
    # 01_metrics
    'f_all_zeros': Known(
        'Your f_score returns 0.0 whatever precision and recall it is given.',
        'The F-score is 0 only when precision or recall is 0.',
        'write the F-beta formula from precision, recall and beta',
        'section 1.4, The F-score',
    ),
    'f_arithmetic_mean': Known(
        'Your f_score is the arithmetic mean (p + r) / 2.',
        'F1 is the harmonic mean, which a low precision or recall pulls down, and F-beta '
        'weighs them with beta.',
        'the harmonic mean and the role of beta',
        'section 1.4, The F-score',
    ),
    'f_beta_not_squared': Known(
        'Your f_score uses beta where the formula has beta squared.',
        'F-beta weighs recall beta times as much as precision through beta**2; with beta '
        'alone only beta = 1 comes out right.',
        'where beta enters the F-beta formula',
        'section 1.4, The F-score',
    ),
    'f_beta_weights_precision': Known(
        'Your f_score puts beta squared on the recall in the denominator, so beta > 1 favours'
        ' precision.',
        'In F-beta, beta > 1 must weigh recall more (beta**2 multiplies the precision in the '
        'denominator).',
        'which of p and r beta**2 multiplies',
        'section 1.4, The F-score',
    ),
    'f_no_zero_division': Known(
        'Your f_score raises ZeroDivisionError when precision and recall are both 0.',
        "A classifier that finds nothing has F = 0.0, as scikit-learn's zero_division=0 says;"
        ' it is not an error.',
        'what F is when the denominator is 0',
        'section 1.4, The F-score',
    ),
    'f_nan_on_zero_division': Known(
        "Your f_score returns NaN when precision and recall are both 0 (NumPy's division of 0"
        ' by 0).',
        'The F-score of a classifier that finds nothing is 0.0, a number that can be averaged'
        ' and compared.',
        'handle the zero denominator before dividing',
        'section 1.4, The F-score',
    ),
    'f_int_zero_on_zero_division': Known(
        'Your f_score returns the integer 0 when precision and recall are both 0.',
        'Every score is a Python float, so code that checks or formats it behaves the same '
        'for every classifier.',
        'return 0.0, a float, in the zero case',
        'section 1.4, The F-score',
    ),
    'f_numpy_floats': Known(
        'Your functions return NumPy numbers, not Python floats.',
        'The exercise asks for Python floats: NumPy scalars print, compare and serialise '
        'differently.',
        'convert with float(...) before returning',
        'section 1.4, The F-score',
    ),
    'f_precision_recall_swapped': Known(
        'Your binary_scores gives the recall as precision and the precision as recall.',
        'Precision divides the true positives by what was predicted positive (TP + FP), '
        'recall by what is positive (TP + FN).',
        "the confusion matrix's rows and columns",
        'section 1.3, Recall, precision, specificity',
    ),
    'f_tensor_scores': Known(
        'Your binary_scores returns torch tensors when it is given tensors.',
        'The scores must be Python floats whatever the labels come in; a 0-d tensor is not a '
        'float.',
        'turn counts into Python numbers (.tolist(), float(...))',
        'section 1.3, Recall, precision, specificity',
    ),
    # 04_learning_rate
    'momentum_dampened': Known(
        'Your velocity is v = mu * v + (1 - mu) * g.',
        "That is an exponential average of the gradients (dampening); the chapter's momentum,"
        " like torch.optim.SGD's, adds the whole gradient: v = mu * v + g.",
        'the velocity update without dampening',
        'section 6, Momentum: two ways to write it',
    ),
    'momentum_forgotten': Known(
        'Your velocity is the current gradient alone.',
        'Without mu * v the optimizer is plain SGD: the past gradients never add up.',
        'how the velocity remembers past gradients',
        'section 6, Momentum: two ways to write it',
    ),
    'momentum_steps_with_gradient': Known(
        'Your velocity is right, but the parameter moves by lr * g, not by lr * v.',
        "The velocity is computed and then unused: the step is plain SGD's.",
        'which quantity the parameter step uses',
        'section 6, Momentum: two ways to write it',
    ),
    'momentum_sign_flipped': Known(
        'Your velocity subtracts the gradient: v = mu * v - g.',
        'The velocity accumulates the gradient with its own sign; the step subtracts lr * v '
        'once, so the sign flips the direction from the second step on.',
        'the signs in the two lines of the update',
        'section 6, Momentum: two ways to write it',
    ),
    'momentum_lr_in_velocity': Known(
        'Your velocity carries the learning rate: v = mu * v + lr * g, and the parameter '
        'moves by v.',
        "That is the other way of writing momentum; it agrees with PyTorch's only while the "
        'learning rate is constant. After an lr change (a scheduler) the old velocity keeps '
        'the old rate.',
        'the two ways to write momentum and which one torch.optim.SGD uses',
        'section 6, Momentum: two ways to write it',
    ),
    'momentum_velocity_aliases_grad': Known(
        'Your velocity is the gradient tensor itself, not a copy: zeroing the gradients in '
        'place zeroes the velocity.',
        'optimizer.zero_grad(set_to_none=False) and in-place updates then change your state '
        'behind your back.',
        'keep your own tensor in self.state (clone)',
        'section 6, Momentum: two ways to write it',
    ),
    'momentum_one_velocity_for_all': Known(
        'Your optimizer keeps one velocity for all the parameters.',
        'Each parameter needs its own velocity (self.state[p]); one shared velocity mixes the'
        ' gradients of different tensors.',
        'per-parameter state in an optimizer',
        'section 6, Graded exercise: SGD with momentum (param groups)',
    ),
    'momentum_no_grad_check': Known(
        'Your step() fails on a parameter whose .grad is None.',
        'A parameter the loss did not use (a frozen layer) has no gradient: skip it, as '
        'torch.optim does.',
        'skip parameters without a gradient',
        'section 6, Graded exercise: SGD with momentum (param groups)',
    ),
    'momentum_defaults_not_groups': Known(
        'Your step() takes lr and momentum from self.defaults, not from each param group.',
        "Groups may set their own values, and schedulers change group['lr']: read them from "
        'the group being updated.',
        'param_groups and what a scheduler changes',
        'section 6, Graded exercise: SGD with momentum (param groups)',
    ),
    # 05_regularization
    'dropout_keeps_with_probability_p': Known(
        'Your dropout keeps each element with probability p, so it drops a fraction 1 - p.',
        'p is the probability of dropping a unit (nn.Dropout(p=0.2) drops 20%).',
        'what p means',
        'Dropout, Exercise: implement inverted dropout',
    ),
    'dropout_no_scaling': Known(
        'Your dropout zeroes units but leaves the survivors as they were.',
        'Inverted dropout divides the survivors by 1 - p so that the expected output equals '
        'the input, and evaluation needs no change.',
        'why the survivors are scaled',
        'Dropout, Exercise: implement inverted dropout',
    ),
    'dropout_divides_by_p': Known(
        'Your dropout divides the survivors by p.',
        'Each unit survives with probability 1 - p, so 1 / (1 - p) keeps the expectation.',
        'the expectation of a dropped-out unit',
        'Dropout, Exercise: implement inverted dropout',
    ),
    'dropout_scaling_at_eval': Known(
        'Your dropout multiplies by 1 - p at evaluation as well as dividing by it in '
        'training.',
        'That is both conventions at once: with inverted dropout evaluation is the identity.',
        'the two conventions of dropout',
        'Dropout, Exercise: implement inverted dropout',
    ),
    'dropout_active_at_eval': Known(
        'Your dropout keeps dropping when training is False.',
        'At evaluation dropout must return its input unchanged, or predictions are random.',
        'what changes between training and evaluation',
        'Dropout, Exercise: implement inverted dropout',
    ),
    'dropout_module_ignores_training': Known(
        'Your Dropout layer drops in eval mode: it does not pass self.training on.',
        'model.eval() sets self.training = False on every layer; the layer has to use it.',
        "nn.Module's train/eval modes",
        'Dropout, Exercise: implement inverted dropout',
    ),
    'dropout_nan_at_p1': Known(
        'Your dropout returns NaN for p = 1.',
        'With every unit dropped x * mask / (1 - p) is 0 / 0; p = 1 must give zeros.',
        'the edge cases p = 0 and p = 1',
        'Dropout, Exercise: implement inverted dropout',
    ),
    'dropout_same_mask_every_call': Known(
        'Your dropout drops the same units on every call.',
        'A fixed mask (a generator seeded inside the function) turns dropout into a fixed '
        'pruning of the network; each forward pass needs a fresh mask.',
        'why the mask is random',
        'Dropout, Exercise: implement inverted dropout',
    ),
    'dropout_one_mask_per_batch': Known(
        'Your dropout draws one mask over the features and shares it across the batch.',
        "Each element is dropped independently: a mask of x's whole shape, not of its last "
        'dimension.',
        "the mask's shape",
        'Dropout, Exercise: implement inverted dropout',
    ),
    'dropout_in_place': Known(
        'Your dropout changes its input tensor.',
        "The caller's tensor must stay as it was (it may be needed again, or by autograd); "
        'return a new tensor.',
        'in-place operations and their cost',
        'Dropout, Exercise: implement inverted dropout',
    ),
    'dropout_float32_output': Known(
        "Your dropout returns float32 whatever the input's dtype.",
        'Dropout must keep the dtype (float64 stays float64).',
        "keep the input's dtype",
        'Dropout, Exercise: implement inverted dropout',
    ),
    'dropout_numpy_round_trip': Known(
        'Your dropout goes through NumPy, so no gradient reaches x.',
        'Autograd only sees torch operations; a detour through NumPy cuts the graph and the '
        'layers before dropout stop learning.',
        'compute the mask and the product in torch',
        'Dropout, Exercise: implement inverted dropout',
    ),
    # 06_batch_norm
    'bn_calls_library': Known(
        "Your batch_norm calls torch's batch norm.",
        'The exercise is to compute it yourself: the mean and variance per channel, '
        'normalise, scale and shift.',
        'the four lines of the BN algorithm',
        'The BN algorithm, and Exercise: batch normalization by hand',
    ),
    'bn_biased_running_var': Known(
        'Your running variance is updated with the biased batch variance (divided by m).',
        'PyTorch normalises the batch with the biased variance but keeps the unbiased one '
        '(divided by m - 1) in running_var.',
        'the two variances of batch norm',
        'The BN algorithm, and Exercise: batch normalization by hand',
    ),
    'bn_unbiased_normalisation': Known(
        'Your batch_norm normalises the batch with the unbiased variance (divided by m - 1; '
        "torch.var's default).",
        'The batch is normalised with its biased variance (divided by m); only running_var '
        'keeps the unbiased one.',
        'the two variances of batch norm',
        'The BN algorithm, and Exercise: batch normalization by hand',
    ),
    'bn_running_momentum_swapped': Known(
        'Your running statistics give the new batch the weight 1 - momentum.',
        'In PyTorch, running = (1 - momentum) * running + momentum * batch: momentum is the '
        'weight of the new batch (Keras uses the other convention).',
        'what momentum means in batch norm',
        'The BN algorithm, and Exercise: batch normalization by hand',
    ),
    'bn_batch_stats_at_eval': Known(
        "Your batch_norm uses the batch's statistics in evaluation.",
        "At evaluation the running statistics stand in for the population's, so a prediction "
        'does not depend on the rest of the batch.',
        'training versus evaluation in batch norm',
        'The BN algorithm, and Exercise: batch normalization by hand',
    ),
    'bn_wrong_axes_4d': Known(
        "Your batch_norm takes a 4-D input's statistics over x.reshape(-1, C), which mixes "
        'channels and positions.',
        'For (N, C, H, W) the statistics are per channel, over N, H and W.',
        'over which axes BN averages for images',
        'Where BN goes',
    ),
}
