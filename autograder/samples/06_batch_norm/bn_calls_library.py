"""Right results, but computed by torch.nn.functional.batch_norm, which the exercise forbids."""
import torch.nn.functional as F


def batch_norm(x, gamma, beta, running_mean, running_var, training=True, momentum=0.1, eps=1e-5):
    return F.batch_norm(x, running_mean, running_var, gamma, beta, training=training,
                        momentum=momentum, eps=eps)
