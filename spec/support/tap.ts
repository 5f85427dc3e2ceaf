// The type of a tap test object (the root `t` or a subtest), for helpers and contract suites.

import type { Test } from 'tap';
import type { BuiltPlugins } from '@tapjs/test';

export type TapTest = Test<BuiltPlugins> & BuiltPlugins;
