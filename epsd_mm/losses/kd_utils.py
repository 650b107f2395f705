"""Shared helpers of the self-distillation losses.

Everything here is plain PyTorch: it knows nothing of MMEngine and can be used
on any logits. Logits are ``(N, C)`` (classification) or dense
``(N, C, *spatial)`` such as ``(N, C, H, W)`` (segmentation, CAM); targets are
integer tensors of shape ``(N,)`` resp. ``(N, *spatial)`` whose entries equal
to ``ignore_index`` mark positions that take no part in a loss.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def check_temperature(temperature: float) -> float:
    """Check that a distillation temperature is strictly positive.

    Args:
        temperature (float): The softmax temperature.

    Returns:
        float: ``temperature`` as a Python float.
    """
    temperature = float(temperature)
    if not temperature > 0:
        raise ValueError(f'temperature must be > 0, but got {temperature}.')
    return temperature


def check_loss_weight(loss_weight: float) -> float:
    """Check that a loss weight is non-negative.

    Args:
        loss_weight (float): The weight multiplying a loss.

    Returns:
        float: ``loss_weight`` as a Python float.
    """
    loss_weight = float(loss_weight)
    if not loss_weight >= 0:
        raise ValueError(f'loss_weight must be >= 0, but got {loss_weight}.')
    return loss_weight


def check_logits(logits: Tensor, name: str = 'logits') -> None:
    """Check that ``logits`` is a floating tensor of shape ``(N, C, *)``.

    Args:
        logits (Tensor): The logits to check.
        name (str): How to call the tensor in error messages.
            Defaults to ``'logits'``.
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f'{name} must be a Tensor, but got {type(logits)}.')
    if logits.dim() < 2:
        raise ValueError(f'{name} must have shape (N, C) or (N, C, H, W), '
                         f'but got shape {tuple(logits.shape)}.')
    if not logits.is_floating_point():
        raise TypeError(
            f'{name} must be a floating point tensor, but got {logits.dtype}.')


def check_same_shape(logits: Tensor,
                     teacher_logits: Tensor,
                     name: str = 'logits',
                     teacher_name: str = 'teacher_logits') -> None:
    """Check that the student and the teacher logits have the same shape.

    Args:
        logits (Tensor): The student logits.
        teacher_logits (Tensor): The teacher logits.
        name (str): Name of the student tensor in error messages.
            Defaults to ``'logits'``.
        teacher_name (str): Name of the teacher tensor in error messages.
            Defaults to ``'teacher_logits'``.
    """
    check_logits(logits, name)
    check_logits(teacher_logits, teacher_name)
    if logits.shape != teacher_logits.shape:
        raise ValueError(
            f'{name} and {teacher_name} must have the same shape, but got '
            f'{name} of shape {tuple(logits.shape)} and {teacher_name} of '
            f'shape {tuple(teacher_logits.shape)}.')


def check_target(target: Tensor,
                 logits: Tensor,
                 name: str = 'target',
                 logits_name: str = 'logits') -> None:
    """Check that ``target`` is an integer tensor matching ``logits``.

    Args:
        target (Tensor): Class indices of shape ``(N,)`` for ``(N, C)``
            logits or ``(N, *spatial)`` for ``(N, C, *spatial)`` logits.
        logits (Tensor): The logits ``target`` labels.
        name (str): Name of the target in error messages.
            Defaults to ``'target'``.
        logits_name (str): Name of the logits in error messages.
            Defaults to ``'logits'``.
    """
    if not isinstance(target, Tensor):
        raise TypeError(f'{name} must be a Tensor, but got {type(target)}.')
    if target.is_floating_point() or target.is_complex() \
            or target.dtype == torch.bool:
        raise TypeError(f'{name} must hold integer class indices, but got '
                        f'dtype {target.dtype}.')
    expected = (logits.shape[0], ) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f'{name} of shape {tuple(target.shape)} does not match '
            f'{logits_name} of shape {tuple(logits.shape)}: expected '
            f'{name} of shape {expected}.')


def check_label_range(target: Tensor,
                      num_classes: int,
                      ignore_index: int,
                      name: str = 'target') -> None:
    """Check that every non-ignored label lies in ``[0, num_classes)``.

    Labels are used as indices by the class-aware losses; an out-of-range
    label would otherwise fail with an opaque indexing or device error.

    Args:
        target (Tensor): Integer class indices.
        num_classes (int): Number of classes ``C``.
        ignore_index (int): Label value that is ignored.
        name (str): Name of the target in error messages.
            Defaults to ``'target'``.
    """
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f'{name} holds labels outside [0, {num_classes}) that are not '
            f'ignore_index={ignore_index}, e.g. {int(target[bad][0])}.')


def flatten_logits(logits: Tensor) -> Tensor:
    """Move the class dimension last and merge all the others.

    Args:
        logits (Tensor): Logits of shape ``(N, C)`` or ``(N, C, *spatial)``.

    Returns:
        Tensor: Logits of shape ``(M, C)`` with ``M = N * prod(spatial)``,
        ordered like ``target.reshape(-1)``.
    """
    if logits.dim() == 2:
        return logits
    num_classes = logits.shape[1]
    return logits.movedim(1, -1).reshape(-1, num_classes)


def valid_mask(target: Optional[Tensor],
               ignore_index: int) -> Optional[Tensor]:
    """Flat boolean mask of the positions that take part in a loss.

    Args:
        target (Tensor, optional): Class indices of shape ``(N, *spatial)``
            or None (every position is valid).
        ignore_index (int): Label value that is excluded.

    Returns:
        Tensor or None: Boolean mask of shape ``(M, )`` or None when
        ``target`` is None.
    """
    if target is None:
        return None
    return (target != ignore_index).reshape(-1)


def masked_mean(values: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean of ``values`` over the positions where ``mask`` is True.

    Masked-out positions are removed with :func:`torch.where`, so whatever
    they hold (even very large logits) does not change the result. If no
    position is valid the result is a zero that is still connected to the
    graph of ``values`` (its gradient is zero), so ``loss.backward()`` and
    DDP's unused-parameter bookkeeping keep working.

    Args:
        values (Tensor): Per-position values of shape ``(M, )``.
        mask (Tensor, optional): Boolean mask of shape ``(M, )``; None means
            plain mean.

    Returns:
        Tensor: A scalar.
    """
    if mask is None:
        if values.numel() == 0:
            return values.sum()
        return values.mean()
    kept = torch.where(mask, values, values.new_zeros(()))
    count = mask.sum().clamp(min=1).to(values.dtype)
    return kept.sum() / count


def kl_div_from_probs(target_probs: Tensor, log_probs: Tensor) -> Tensor:
    """Per-position ``KL(q || p)``, summed over the class dimension.

    Computed as ``sum_c q_c * log q_c - q_c * log p_c`` with
    :func:`torch.xlogy`, so classes with ``q_c == 0`` (e.g. one-hot targets)
    contribute exactly zero.

    Args:
        target_probs (Tensor): Target distribution ``q`` of shape ``(M, C)``.
        log_probs (Tensor): Log of the predicted distribution ``p`` of shape
            ``(M, C)``.

    Returns:
        Tensor: Divergences of shape ``(M, )``.
    """
    return (torch.xlogy(target_probs, target_probs) -
            target_probs * log_probs).sum(dim=-1)


def soft_kl_div(logits: Tensor,
                teacher_logits: Tensor,
                temperature: float = 1.0,
                target: Optional[Tensor] = None,
                ignore_index: int = 255) -> Tensor:
    """Temperature-scaled KL divergence between teacher and student.

    Computes ``T^2 * KL(softmax(teacher / T) || softmax(logits / T))``,
    summed over classes and averaged over the positions (samples or pixels)
    whose ``target`` is not ``ignore_index``. The teacher is detached, so it
    never receives a gradient.

    Args:
        logits (Tensor): Student logits, ``(N, C)`` or ``(N, C, *spatial)``.
        teacher_logits (Tensor): Teacher logits, same shape as ``logits``.
        temperature (float): Softmax temperature ``T``. Defaults to 1.0.
        target (Tensor, optional): Labels of shape ``(N, *spatial)`` used
            only to mask out ``ignore_index`` positions. Defaults to None.
        ignore_index (int): Label value to ignore. Defaults to 255.

    Returns:
        Tensor: The scalar loss (without any loss weight).
    """
    temperature = check_temperature(temperature)
    check_same_shape(logits, teacher_logits)
    if target is not None:
        check_target(target, logits)
    student_log_probs = torch.log_softmax(
        flatten_logits(logits) / temperature, dim=-1)
    teacher_probs = torch.softmax(
        flatten_logits(teacher_logits.detach()) / temperature, dim=-1)
    kl = kl_div_from_probs(teacher_probs, student_log_probs)
    loss = masked_mean(kl, valid_mask(target, ignore_index))
    return loss * temperature**2


def label_index(target: Tensor, ignore_index: int) -> Tuple[Tensor, Tensor]:
    """Flatten ``target`` into safe indices plus a validity mask.

    Args:
        target (Tensor): Integer labels of any shape.
        ignore_index (int): Label value to ignore.

    Returns:
        tuple[Tensor, Tensor]: ``(index, valid)``, both flat; ``index`` is a
        long tensor in which ignored positions are replaced by 0 and
        ``valid`` is the boolean mask of non-ignored positions.
    """
    flat = target.reshape(-1).long()
    valid = flat != ignore_index
    index = torch.where(valid, flat, flat.new_zeros(()))
    return index, valid
