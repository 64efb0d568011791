"""DINO's projection head and loss, and iBOT's loss, as the reference for Patchwork's
`dino_head`, `dino_loss` and `ibot_loss` parity fixtures.

Provenance: the semantics follow facebookresearch/dino (`vision_transformer.py`:
`DINOHead`; `main_dino.py`: `DINOLoss`) and bytedance/ibot (`main_ibot.py`:
`iBOTLoss`). This file is a re-implementation written against that code, not a copy of
its text: class, attribute and parameter names are the official ones, so
`state_dict()` names match DINO checkpoints (`mlp.0.weight`, ...,
`last_layer.weight_g`, `last_layer.weight_v`), and the operations run in the same order.

Differences from upstream, all forced or additive:
  * Single process: upstream all-reduces the batch centre over the workers and divides
    by `len(teacher_output) * world_size`; here the world size is 1 and there is no
    all-reduce.
  * `use_bn` is dropped from `DINOHead` (the default, False, is the only case kept).
  * `DINOHead` keeps `torch.nn.utils.weight_norm` (deprecated in current torch in
    favour of parametrizations) because it yields the checkpoint names `weight_g`
    [out_dim, 1] and `weight_v` [out_dim, bottleneck_dim].
  * `iBOTLoss.forward` takes `student_mask` as upstream does (a list, one [B, h, w]
    bool tensor per global view); the local-crop [CLS] argument may be None.

Semantics worth knowing (they are the official ones):
  * DINOHead: mlp = Linear(in, hidden) GELU [Linear(hidden, hidden) GELU]*(nlayers-2)
    Linear(hidden, bottleneck) (a single Linear(in, bottleneck) when nlayers == 1);
    x = F.normalize(mlp(x), dim=-1, p=2) (eps 1e-12); last_layer = weight-normalised
    Linear(bottleneck, out, bias=False), w[o] = g[o] * v[o] / ||v[o]|| (no eps);
    g starts at 1 and, with norm_last_layer, is frozen (requires_grad False).
  * DINOLoss: student logits / student_temp, chunked into ncrops views; teacher
    q = softmax((t - center) / temp) (no grad), chunked into 2 views; the loss is the
    mean over all (iq, v) pairs with v != iq of mean_batch(sum(-q * log_softmax(s))).
    Then center <- m * center + (1 - m) * mean_rows(teacher_output). The teacher
    temperature comes from a schedule indexed by epoch (linear warm-up, then constant).
  * iBOTLoss: the [CLS] term is DINO's over the v != q pairs; the patch term uses the
    same-view pairs v == q: per image, sum over patches of mask * sum(-q_patch *
    log_softmax(s_patch)), divided by mask.sum().clamp(min=1), mean over images, mean
    over views. loss = lambda1 * cls + lambda2 * patch. The patch centre [1, 1, D2] has
    its own momentum: center2 <- m2 * center2 + (1 - m2) * mean_images(mean_patches(t)).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, norm_last_layer=True, nlayers=3, hidden_dim=2048,
                 bottleneck_dim=256):
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


def teacher_temp_schedule(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs):
    """Linear warm-up of the teacher temperature, then constant; indexed by epoch."""
    return np.concatenate((
        np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
        np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp,
    ))


class DINOLoss(nn.Module):
    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp,
                 warmup_teacher_temp_epochs, nepochs, student_temp=0.1, center_momentum=0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.teacher_temp_schedule = teacher_temp_schedule(
            warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs)

    def forward(self, student_output, teacher_output, epoch):
        student_out = (student_output / self.student_temp).chunk(self.ncrops)
        temp = self.teacher_temp_schedule[epoch]
        teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1)
        teacher_out = teacher_out.detach().chunk(2)

        total_loss, n_loss_terms = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue  # the student's view is the teacher's own
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean()
                n_loss_terms += 1
        total_loss /= n_loss_terms
        self.update_center(teacher_output)
        return total_loss

    @torch.no_grad()
    def update_center(self, teacher_output):
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
        batch_center = batch_center / len(teacher_output)
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


class iBOTLoss(nn.Module):
    def __init__(self, out_dim, patch_out_dim, ngcrops, nlcrops, warmup_teacher_temp,
                 teacher_temp, warmup_teacher_temp2, teacher_temp2,
                 warmup_teacher_temp_epochs, nepochs, student_temp=0.1,
                 center_momentum=0.9, center_momentum2=0.9,
                 lambda1=1.0, lambda2=1.0, mim_start_epoch=0):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.center_momentum2 = center_momentum2
        self.ngcrops = ngcrops
        self.nlcrops = nlcrops
        self.ncrops = ngcrops + nlcrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center2", torch.zeros(1, 1, patch_out_dim))
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.teacher_temp_schedule = teacher_temp_schedule(
            warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs)
        if mim_start_epoch == 0:
            self.teacher_temp2_schedule = teacher_temp_schedule(
                warmup_teacher_temp2, teacher_temp2, warmup_teacher_temp_epochs, nepochs)
        else:
            self.teacher_temp2_schedule = np.concatenate((
                np.ones(mim_start_epoch) * warmup_teacher_temp2,
                teacher_temp_schedule(warmup_teacher_temp2, teacher_temp2, warmup_teacher_temp_epochs,
                                      nepochs - mim_start_epoch),
            ))

    def forward(self, student_output, teacher_output, student_local_cls, student_mask, epoch):
        student_cls, student_patch = student_output
        teacher_cls, teacher_patch = teacher_output
        if student_local_cls is not None:
            student_cls = torch.cat([student_cls, student_local_cls])

        student_cls_c = (student_cls / self.student_temp).chunk(self.ncrops)
        student_patch_c = (student_patch / self.student_temp).chunk(self.ngcrops)

        temp = self.teacher_temp_schedule[epoch]
        temp2 = self.teacher_temp2_schedule[epoch]
        teacher_cls_c = F.softmax((teacher_cls - self.center) / temp, dim=-1).detach().chunk(self.ngcrops)
        teacher_patch_c = F.softmax((teacher_patch - self.center2) / temp2, dim=-1).detach().chunk(self.ngcrops)

        total_loss1, n_loss_terms1 = 0, 0
        total_loss2, n_loss_terms2 = 0, 0
        for q in range(len(teacher_cls_c)):
            for v in range(len(student_cls_c)):
                if v == q:
                    loss2 = torch.sum(-teacher_patch_c[q] * F.log_softmax(student_patch_c[v], dim=-1), dim=-1)
                    mask = student_mask[v].flatten(-2, -1)
                    loss2 = torch.sum(loss2 * mask.float(), dim=-1) / mask.sum(dim=-1).clamp(min=1.0)
                    total_loss2 += loss2.mean()
                    n_loss_terms2 += 1
                else:
                    loss1 = torch.sum(-teacher_cls_c[q] * F.log_softmax(student_cls_c[v], dim=-1), dim=-1)
                    total_loss1 += loss1.mean()
                    n_loss_terms1 += 1

        total_loss1 = total_loss1 / n_loss_terms1 * self.lambda1
        total_loss2 = total_loss2 / n_loss_terms2 * self.lambda2
        total_loss = dict(cls=total_loss1, patch=total_loss2, loss=total_loss1 + total_loss2)
        self.update_center(teacher_cls, teacher_patch)
        return total_loss

    @torch.no_grad()
    def update_center(self, teacher_cls, teacher_patch):
        cls_center = torch.sum(teacher_cls, dim=0, keepdim=True) / len(teacher_cls)
        self.center = self.center * self.center_momentum + cls_center * (1 - self.center_momentum)
        patch_center = torch.sum(teacher_patch.mean(1), dim=0, keepdim=True) / len(teacher_patch)
        self.center2 = self.center2 * self.center_momentum2 + patch_center * (1 - self.center_momentum2)
