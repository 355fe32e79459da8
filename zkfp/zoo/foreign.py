"""Text in another language than the corpus (French, written for this project), for prompts that
no calibration or training text resembles."""

from __future__ import annotations

FRENCH = """\
Le matin, la boulangère ouvre sa boutique avant que la rue ne se réveille. Elle range les pains
encore chauds sur l'étagère de bois et compte les croissants deux fois, parce que le premier
compte est toujours faux. Un chat gris attend devant la porte; il sait qu'un morceau de brioche
tombera bientôt. Plus loin, le facteur pousse son vélo sur les pavés mouillés et salue le
pharmacien, qui lève à peine les yeux de son journal. À l'école, les enfants récitent une
fable où le renard flatte le corbeau pour lui voler son fromage. La maîtresse écrit au tableau
une question difficile: pourquoi la lune change-t-elle de forme chaque semaine? Personne ne
répond, sauf une petite fille au fond de la classe qui parle des ombres et du soleil. Le soir,
le vent se lève sur la falaise et les pêcheurs rentrent leurs bateaux dans le port. On entend
les cordes grincer, les mouettes crier, et quelqu'un chante une vieille chanson de marins.
Dans la cuisine, une soupe de légumes mijote pendant que le grand-père raconte, pour la
centième fois, l'hiver où la rivière avait gelé jusqu'au village voisin. Les vacances d'été
commencent demain; la famille partira vers les montagnes, où l'air est frais et les sentiers
sont bordés de fleurs jaunes. Il faudra se lever tôt, charger la voiture et ne rien oublier:
les cartes, les chaussures de marche, le pique-nique et surtout le parapluie, car le ciel des
Alpes change d'humeur plus vite qu'un enfant fatigué.
"""
