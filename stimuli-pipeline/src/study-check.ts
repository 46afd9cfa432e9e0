// The study's layers checked against its model, reported into the study file: `legible validate`
// runs it (studies' validate takes it as a StudyCheck, so the studies package needs no ONNX code) and
// `legible stimuli` runs it before extracting anything.
import { existsSync } from 'node:fs';
// The ONNX code loads when a study is checked (every `legible` run loads this module, for validate).
import { LegibleError, problemAt, validateCommand, type Command, type LoadedStudy, type StudyProblem } from '@legible/studies';

/** Problems of model.layers[].tensor / layout / class_token against the model file, located in the study file. */
export async function modelProblems(loaded: LoadedStudy, text: string): Promise<StudyProblem[]> {
  if (!existsSync(loaded.paths.model)) return []; // the file check reports it
  const { checkModelLayers } = await import('./layout.ts');
  const { ProtoError } = await import('./onnx/proto.ts');
  try {
    const { problems } = await checkModelLayers(loaded.paths.model, loaded.study.model.layers);
    return problems.map((p) => problemAt(text, ['model', 'layers', p.index, p.field], p.message));
  } catch (e) {
    if (e instanceof ProtoError) return [problemAt(text, ['model', 'onnx'], `${loaded.paths.model} is not an ONNX model: ${e.message}`)];
    if (e instanceof LegibleError) return [problemAt(text, ['model', 'onnx'], e.message)];
    throw e;
  }
}

/** `legible validate`: the study file, its files, and its layers against the model. */
export const validate: Command = validateCommand([modelProblems]);
