"""One process of a sharded evaluation, for tests/test_sharded_evaluation.py:

    python -m tests.eval_worker '<json: devices, latents, params, workdir, out[, coordinator, processes, id]>'

Evaluates the digits smoke config with the given weights (an .npz of flattened params) on this
process's devices, and process 0 writes the rows to `out`.
"""
import json
import sys


def main(argv):
    args = json.loads(argv[1])
    import jax
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', args['devices'])
    from lct_jax import parallel
    if args.get('processes', 1) > 1:
        parallel.initialize_distributed(args['coordinator'], args['processes'], args['id'])
    from lct_jax.builders import build_evaluator
    from tests.test_sharded_evaluation import config_for, load_flat_params
    config = config_for(args['latents'])
    rows = build_evaluator(config, args['workdir'], show_progress=False).rows(load_flat_params(args['params']), 'worker',
                                                                              config.sampling.num_samples)
    if jax.process_index() == 0:
        with open(args['out'], 'w') as f:
            json.dump({'rows': rows, 'devices': jax.device_count(), 'processes': jax.process_count()}, f)


if __name__ == '__main__':
    main(sys.argv)
