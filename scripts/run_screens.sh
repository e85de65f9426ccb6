#!/usr/bin/env bash
# The reduced-design screens of docs/findings.md, re-run so that their runs are archived in
# results/screen_<experiment>: client-lr slice at master lr 1e-3, seeds 0 and 1, 300 episodes,
# simultaneous update (except the actor_update confound, whose axis is the update order), packs.
#
#   bash scripts/run_screens.sh [EXPERIMENT ...]      # default: every experiment below
#   OUT=sweeps PACK=16 bash scripts/run_screens.sh activations optimizer
#
# Each sweep resumes where it stopped (finished runs are skipped); archive with
#   ccm-madrl archive sweeps/screen_<experiment> --out results/screen_<experiment>
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-sweeps}
PACK=${PACK:-16}
ALL=(mitigations/activations mitigations/reward_norm mitigations/reward_scale mitigations/layerwise_lr
     mitigations/grad_clip mitigations/preact_penalty mitigations/entropy mitigations/layernorm
     mitigations/larger_actor mitigations/input_norm confounds/optimizer confounds/rng_mode
     confounds/actor_sharing confounds/actor_update)
want=("$@")
for f in "${ALL[@]}"; do
    name=${f#*/}
    if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " =~ " ${name} " ]]; then continue; fi
    sets=(--set training.episodes=300)
    [ "$name" = actor_update ] || sets+=(--set agent.actor_update=simultaneous)
    echo "== screen_${name} ($(date -u +%H:%M:%S))"
    ccm-madrl sweep "configs/${f}.yaml" --out "${OUT}/screen_${name}" "${sets[@]}" \
        --seeds "[0, 1]" --axis "agent.critic_lr=[1.0e-3]" --workers 1 --pack "${PACK}" --no-progress
done
