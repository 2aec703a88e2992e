"""The book's retrieval question set: questions about Python's own ``help()`` topics, each with its gold passage.

Written for the book. Each question has

* ``topic``: the ``pydoc_data.topics`` key whose text answers it (the *gold document*);
* ``evidence``: a sentence or clause copied verbatim from that topic (compared after collapsing whitespace) — the
  *gold passage*. A retrieved chunk counts as relevant when it covers at least half of the evidence's words, wherever
  they occur (some topics repeat others: ``else`` is a copy of ``if``, ``compound`` holds ``for``, ``while``, ...);
* ``answers``: short strings that make a generated answer correct (see :func:`lmkit.retrieval.rag.is_correct`).

The questions are phrased the way a user would ask them, not with the words of the passage, so that retrieval has
to match meaning rather than copy strings. All gold topics are shorter than 4,000 characters, so the chapter can embed
every document they come from on a CPU in seconds (:func:`lmkit.data.pydoc_topics` with ``max_chars=4000``).
"""

from __future__ import annotations

from typing import TypedDict


class Question(TypedDict):
    question: str
    answers: list[str]
    topic: str
    evidence: str


QUESTIONS: list[Question] = [
    {"question": "What exception does a failing assert statement raise?", "answers": ["AssertionError"],
     "topic": "assert", "evidence": "if not expression: raise AssertionError"},
    {"question": "Which command-line option makes Python skip assert statements?", "answers": ["-O"],
     "topic": "assert", "evidence": 'when optimization is requested (command line option "-O")'},
    {"question": "Inside a class named Ham, what name does the private identifier __spam become?",
     "answers": ["_Ham__spam"], "topic": "atom-identifiers",
     "evidence": 'occurring in a class named "Ham" will be transformed to "_Ham__spam"'},
    {"question": "What error do you get when you evaluate a name that has no value bound to it?",
     "answers": ["NameError"], "topic": "atom-identifiers",
     "evidence": 'When a name is not bound, an attempt to evaluate it raises a "NameError" exception.'},
    {"question": "Which method is tried as a fallback when __getattribute__ raises AttributeError?",
     "answers": ["__getattr__"], "topic": "attribute-references",
     "evidence": 'If an "AttributeError" is raised and the object has a "__getattr__()" method, that method is called '
                 "as a fallback."},
    {"question": "In what kind of function may an await expression appear?", "answers": ["coroutine"],
     "topic": "await", "evidence": "Can only be used inside a *coroutine function*."},
    {"question": "What does the ^ operator compute for two integers?", "answers": ["XOR", "exclusive or"],
     "topic": "bitwise", "evidence": 'The "^" operator yields the bitwise XOR (exclusive OR) of its arguments'},
    {"question": "Through which attribute of a function can you get its compiled code object?",
     "answers": ["__code__"], "topic": "bltin-code-objects",
     "evidence": 'can be extracted from function objects through their "__code__" attribute'},
    {"question": "Apart from the name Ellipsis, how can the ellipsis object be written?", "answers": ["..."],
     "topic": "bltin-ellipsis-object", "evidence": 'It is written as "Ellipsis" or "...".'},
    {"question": "What do functions return when they have no explicit return value?", "answers": ["None"],
     "topic": "bltin-null-object", "evidence": "This object is returned by functions that don’t explicitly return a "
                                                "value."},
    {"question": "What does the expression not 'foo' produce?", "answers": ["False"], "topic": "booleans",
     "evidence": "\"not 'foo'\" produces \"False\""},
    {"question": "When a loop is ended by break, what happens to the loop's else clause?",
     "answers": ["skip", "skipped", "skips", "not executed", "not run"], "topic": "break",
     "evidence": 'skipping the optional "else" clause if the loop has one'},
    {"question": "After break ends a for loop, what value does the loop variable have?", "answers": ["current value"],
     "topic": "break", "evidence": "the loop control target keeps its current value"},
    {"question": "Which special method lets an instance be called like a function?", "answers": ["__call__"],
     "topic": "callable-types", "evidence": "Called when the instance is “called” as a function"},
    {"question": "A class statement lists no base classes. Which class does it inherit from?", "answers": ["object"],
     "topic": "class", "evidence": 'inherit, by default, from the base class "object"'},
    {"question": "In `with manager as x`, the return value of which method is bound to x?", "answers": ["__enter__"],
     "topic": "context-managers",
     "evidence": "The \"with\" statement will bind this method’s return value to the target(s) specified in the \"as\" "
                 "clause"},
    {"question": "What must a context manager's exit method return to suppress an exception?",
     "answers": ["true", "True"], "topic": "context-managers",
     "evidence": "wishes to suppress the exception (i.e., prevent it from being propagated), it should return a "
                 "true value"},
    {"question": "What does the continue statement do in a loop?", "answers": ["next cycle", "next iteration"],
     "topic": "continue", "evidence": "It continues with the next cycle of the nearest enclosing loop."},
    {"question": "In arithmetic, if one operand is 3j, what type is the other operand converted to?",
     "answers": ["complex"], "topic": "conversions",
     "evidence": "If either argument is a complex number, the other is converted to complex"},
    {"question": "Which exception does del raise for a name that is not bound?", "answers": ["NameError"],
     "topic": "del", "evidence": 'If the name is unbound, a "NameError" exception will be raised.'},
    {"question": "A dict display repeats the same key twice. Which value ends up in the dictionary?",
     "answers": ["last", "later", "final"], "topic": "dict",
     "evidence": "the final dictionary’s value for that key will be the last one given"},
    {"question": "What does ** mean inside a dictionary display?", "answers": ["unpacking", "unpack"],
     "topic": "dict", "evidence": 'A double asterisk "**" denotes *dictionary unpacking*.'},
    {"question": "Are free variables resolved when the code is compiled or when it runs?",
     "answers": ["runtime", "run time", "run-time"], "topic": "dynamic-features",
     "evidence": "Name resolution of free variables occurs at runtime, not at compile time."},
    {"question": "Which model of error handling does Python follow?", "answers": ["termination"],
     "topic": "exceptions", "evidence": "Python uses the “termination” model of error handling"},
    {"question": "Which unhandled exception ends a program without a stack traceback being printed?",
     "answers": ["SystemExit"], "topic": "exceptions", "evidence": 'except when the exception is "SystemExit"'},
    {"question": "What do you need to write to make a tuple with just one element?",
     "answers": ["trailing comma", "comma"], "topic": "exprlists",
     "evidence": "The trailing comma is required only to create a single tuple"},
    {"question": "In which base are the integer and exponent parts of a float literal read?",
     "answers": ["10", "ten", "decimal"], "topic": "floating",
     "evidence": "the integer and exponent parts are always interpreted using radix 10"},
    {"question": "When does the else clause of a for loop run?", "answers": ["exhausted", "exhausts"],
     "topic": "for",
     "evidence": 'When the iterator is exhausted, the suite in the "else" clause, if present, is executed'},
    {"question": "The global statement is a directive to which part of Python?", "answers": ["parser"],
     "topic": "global", "evidence": '"global" is a directive to the parser.'},
    {"question": "In the interactive interpreter, which variable holds the result of the last evaluation?",
     "answers": ["_"], "topic": "id-classes",
     "evidence": 'the interactive interpreter makes the result of the last evaluation available in the variable "_"'},
    {"question": "How many of the suites of an if/elif/else statement are executed?",
     "answers": ["exactly one", "one", "1"], "topic": "if",
     "evidence": "It selects exactly one of the suites by evaluating the expressions one by one"},
    {"question": "What is the real part of the number that an imaginary literal such as 3j yields?",
     "answers": ["0.0", "0", "zero"], "topic": "imaginary",
     "evidence": "An imaginary literal yields a complex number with a real part of 0.0."},
    {"question": 'Is the empty string "" in "abc"?', "answers": ["True", "yes"], "topic": "in",
     "evidence": "Empty strings are always considered to be a substring of any other string"},
    {"question": "Which special method does a class define to customise the `in` operator?",
     "answers": ["__contains__"], "topic": "in",
     "evidence": 'For user-defined classes which define the "__contains__()" method'},
    {"question": "Which character can separate groups of digits in an integer literal such as 100_000?",
     "answers": ["underscore", "underscores", "_"], "topic": "integers",
     "evidence": "Underscores are ignored for determining the numeric value of the literal."},
    {"question": "What can a function created with lambda not contain?", "answers": ["statements", "annotations"],
     "topic": "lambda",
     "evidence": "functions created with lambda expressions cannot contain statements or annotations"},
    {"question": "Unlike global names, what must the names in a nonlocal statement refer to?",
     "answers": ["pre-existing binding", "existing binding", "enclosing scope"], "topic": "nonlocal",
     "evidence": "must refer to pre-existing bindings in an enclosing scope"},
    {"question": "Is -1 a single numeric literal in Python? What is it made of?",
     "answers": ["unary", "operator"], "topic": "numbers",
     "evidence": "is actually an expression composed of the unary operator"},
    {"question": "What happens when a pass statement is executed?", "answers": ["nothing"], "topic": "pass",
     "evidence": "when it is executed, nothing happens"},
    {"question": "What is the value of the Python expression -1**2?", "answers": ["-1"], "topic": "power",
     "evidence": '"-1**2" results in "-1"'},
    {"question": "What does 10**-2 evaluate to in Python?", "answers": ["0.01"], "topic": "power",
     "evidence": '"10**-2" returns "0.01"'},
    {"question": "Which exception do you get when you raise 0.0 to a negative power?",
     "answers": ["ZeroDivisionError"], "topic": "power",
     "evidence": 'Raising "0.0" to a negative power results in a "ZeroDivisionError".'},
    {"question": "Which exception does a return statement inside a generator cause?", "answers": ["StopIteration"],
     "topic": "return", "evidence": 'will cause "StopIteration" to be raised'},
    {"question": "In an asynchronous generator, an empty return statement raises which exception?",
     "answers": ["StopAsyncIteration"], "topic": "return", "evidence": 'will cause "StopAsyncIteration" to be raised'},
    {"question": "A right shift x >> n is defined as which arithmetic operation?", "answers": ["floor division"],
     "topic": "shifting", "evidence": 'A right shift by *n* bits is defined as floor division by "pow(2,n)".'},
    {"question": "Which methods can a class define so that its instances test as false?",
     "answers": ["__bool__", "__len__"], "topic": "truth",
     "evidence": 'either a "__bool__()" method that returns "False" or a "__len__()" method that returns zero'},
    {"question": "Which attribute of a bound method is the object the method operates on?", "answers": ["__self__"],
     "topic": "typesmethods", "evidence": '"m.__self__" is the object on which the method operates'},
    {"question": "Which attribute of a module holds its symbol table?", "answers": ["__dict__"],
     "topic": "typesmodules", "evidence": 'A special attribute of every module is "__dict__".'},
    {"question": "How is the bitwise inversion ~x of an integer defined?", "answers": ["-(x+1)", "-(x + 1)"],
     "topic": "unary", "evidence": 'The bitwise inversion of "x" is defined as "-(x+1)".'},
    {"question": "What does a bare raise do when no exception is currently being handled?",
     "answers": ["RuntimeError"], "topic": "raise",
     "evidence": 'a "RuntimeError" exception is raised indicating that this is an error'},
    {"question": "In `raise A from B`, which attribute of the new exception is set to B?", "answers": ["__cause__"],
     "topic": "raise", "evidence": 'it will be attached to the raised exception as the "__cause__" attribute'},
    {"question": "Which operator is meant for matrix multiplication?", "answers": ["@"], "topic": "binary",
     "evidence": 'The "@" (at) operator is intended to be used for matrix multiplication.'},
    {"question": "What type does dividing two integers with / produce?", "answers": ["float"], "topic": "binary",
     "evidence": "Division of integers yields a float"},
    {"question": "If __enter__ succeeds, which method does the with statement promise to call?",
     "answers": ["__exit__"], "topic": "with", "evidence": 'then "__exit__()" will always be called'},
    {"question": "Which class attribute lists the classes searched during method resolution?",
     "answers": ["__mro__"], "topic": "specialattrs",
     "evidence": "This attribute is a tuple of classes that are considered when looking for base classes during method "
                 "resolution."},
    {"question": "What is the only operation you can perform on a function object?", "answers": ["call"],
     "topic": "typesfunctions", "evidence": "The only operation on a function object is to call it"},
]
"""56 questions over 44 short ``help()`` topics."""
