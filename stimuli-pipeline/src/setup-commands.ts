// Setting up a lab's own model and study: `legible model init|check` (model-setup.ts) and
// `legible init` (scaffold.ts). Like every package's commands module, this file holds only the
// commands' names and help: each run() imports its implementation, so `legible --help` loads
// no model-reading code (studies/test/cli-lazy.test.ts).
import type { Command } from '@legible/studies';

const INIT_HELP = [
  'Writes model.json beside the ONNX file: the preprocessing every study of this model uses (a study',
  'may leave model.input out; where it gives one, the two must agree). The input size comes from the',
  'graph; the rest from the preset, each overridable:',
  '  torchvision  Resize(size·256/224) + CenterCrop(size), ImageNet mean/std, RGB in [0, 1]',
  '               (torchvision\'s ImageNet-1k V1 weights; V2 weights resize to 232 for 224: --resize 232)',
  '  timm         shorter side to ⌊size/0.875⌋, centre crop, ImageNet mean/std (check the model\'s',
  '               pretrained_cfg: some use mean/std 0.5 or another crop_pct)',
  '  hf-vit       straight resize to size × size, mean 0.5, std 0.5 (ViTImageProcessor)',
  '',
  'Options:',
  '  --preset P        torchvision, timm or hf-vit',
  '  --size N | H,W    input size (default: the graph\'s; required where the graph leaves it open)',
  '  --resize N|none   shorter side before the centre crop, or none for a straight resize',
  '  --channels C      rgb, bgr or gray',
  '  --range R         1 (pixels scaled to [0, 1]) or 255 (Caffe-style)',
  '  --mean a,b,c      per-channel mean;  --std a,b,c  per-channel standard deviation',
  '  --force           replace an existing model.json',
  '',
  'Then: `legible model check model.onnx` compares the model with the numbers the export recipe',
  'printed for its reference image (docs/models.md).',
].join('\n');

const CHECK_HELP = [
  'Runs the reference image the export recipe wrote (check.png) through model.json\'s preprocessing',
  'and the ONNX model, and compares the output with the numbers the recipe computed in PyTorch',
  '(check.json). A wrong mean, crop or channel order, or an export that computes something else,',
  'shows as a large difference. Exit status 0 when the largest difference is within the tolerance.',
  '',
  'Options:',
  '  --expect FILE     the recipe\'s numbers (default: check.json beside the model)',
  '  --image FILE      the reference image (default: the one check.json names)',
  '  --tolerance T     largest difference allowed, relative to the largest |value| (default 0.001)',
].join('\n');

export const model: Command = {
  name: 'model',
  summary: 'Set up a model: `model init` writes its preprocessing (model.json), `model check` tests the export',
  usage: 'init <model.onnx> --preset torchvision|timm|hf-vit [--size N] [--resize N|none] [--mean …] [--std …] [--force]\n       legible model check <model.onnx> [--expect check.json] [--image check.png] [--tolerance 0.001]',
  help: `legible model init\n\n${INIT_HELP}\n\nlegible model check\n\n${CHECK_HELP}`,
  run: async (argv) => (await import('./model-setup.ts')).runModel(argv),
};

export const init: Command = {
  name: 'init',
  summary: 'Write a new study to edit from a model and an image folder (layers across depth, three bases, IMI defaults)',
  usage: '<id> --model FILE --images DIR [--dir DIR] [--layers N] [--title T] [--preset P] [--yes]',
  help: [
    'Writes <dir>/study.yaml (default studies/<id>/study.yaml): the model\'s layers chosen across depth',
    'from its graph (what `legible layers` lists), the channels, NMF and SAE bases, and the IMI',
    'protocol\'s design and exclusion rules (40 main + 5 catch trials, 30 responses per feature, catch',
    'accuracy ≥ 0.8, 135–2500 s, instructions ≥ 15 s). Then it prints what to edit and what to run.',
    'On a terminal it asks for what the options leave out; --yes (or no terminal) asks nothing.',
    '',
    'Options:',
    '  --model FILE     the ONNX model (its preprocessing: model.json beside it, `legible model init`)',
    '  --images DIR     the image folder (flat, or one sub-folder per class)',
    '  --dir DIR        the study\'s folder (default studies/<id>)',
    '  --layers N       how many layers (default 3)',
    '  --title T        the title participants see',
    '  --preset P       without model.json: write model.input from preset torchvision, timm or hf-vit',
    '                   (also --size, --resize, --channels, --range, --mean, --std as `legible model init`)',
    '  --yes            ask nothing; take the defaults',
  ].join('\n'),
  run: async (argv) => (await import('./scaffold.ts')).runInit(argv),
};

export const commands: Command[] = [init, model];
