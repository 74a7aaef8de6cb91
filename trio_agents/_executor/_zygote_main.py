"""``python -m trio_agents._executor._zygote_main FD``: start the zygote.

A separate launcher, so the zygote's classes keep their module name (a
module run with ``-m`` becomes ``__main__``, and pickles would not match).
"""

from trio_agents._executor._zygote import main

main()
