// The study's layers checked against its model, reported into the study file: `legible validate`
// runs it (studies' validate takes it as a StudyCheck, so the studies package needs no ONNX code) and
// `legible stimuli` runs it before extracting anything.
import { existsSync } from 'node:fs';
import { LegibleError, problemAt, validateCommand, type Command, type LoadedStudy, type StudyProblem } from '@legible/studies';
import { checkModelLayers } from './layout.ts';
import { ProtoError } from './onnx/proto.ts';

/** Problems of model.layers[].tensor / layout / class_token against the model file, located in the study file. */
export async function modelProblems(loaded: LoadedStudy, text: string): Promise<StudyProblem[]> {
  if (!existsSync(loaded.paths.model)) return []; // the file check reports it
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
