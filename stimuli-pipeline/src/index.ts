export { buildStimuli, ensureBuilt, PIPELINE_VERSION, type BuildOptions } from './build.ts';
export { listImages, splitOf, writeFashionMnist, FASHION_MNIST_CLASSES } from './dataset.ts';
export { extractActivations, type Activations, type LayerActivations } from './extract.ts';
export { applyBasis, fitNmf, nmfCodes } from './bases.ts';
export { openSession, type Device } from './runtime.ts';
export * from './onnx/proto.ts';
export * from './onnx/graph.ts';
export { addTaps, addTapsToModel, listTensors, type TensorEntry } from './onnx/taps.ts';
